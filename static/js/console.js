// The upload console: drop files and folders, upload each with its own request and progress bar,
// then follow its ingestion status by polling a small status endpoint.
(function () {
  "use strict";

  const PARALLEL_UPLOADS = 3;
  const POLL_MS = 1500;
  const form = document.getElementById("upload-form");
  const list = document.getElementById("uploads");
  const documentsBox = document.getElementById("documents");
  const countersBox = document.getElementById("counters");
  const collectionsBox = document.getElementById("collections-list");
  const tracked = new Map(); // document id -> upload list item
  const waiting = [];
  let running = 0;

  document.addEventListener("submit", function (event) {
    const target = event.target;
    if (target.matches("[data-confirm]") && !window.confirm(target.dataset.confirm)) {
      event.preventDefault();
    }
  });

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function fragment(html) {
    // Our own server-rendered fragments, escaped by the templates.
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content;
  }

  function describe(doc) {
    if (doc.status === "ready") {
      const pages = doc.page_count ? doc.page_count + " page" + (doc.page_count === 1 ? "" : "s") + ", " : "";
      return "Ready: " + pages + doc.chunk_count + " chunk" + (doc.chunk_count === 1 ? "" : "s");
    }
    if (doc.status === "failed") return "Failed: " + (doc.error || "unknown reason");
    if (doc.stalled) return "Stalled: no worker is processing it any more; Retry it in the list below.";
    if (doc.status === "processing") {
      const since = doc.processing_seconds == null ? "Processing" : "Processing for " + duration(doc.processing_seconds);
      const progress = doc.progress;
      if (!progress) return since + "…";
      if (!progress.total) return since + ": " + progress.stage_label.toLowerCase() + "…";
      return since + ": " + progress.stage_label.toLowerCase() + ", " + progress.done + " of " + progress.total +
        " chunks embedded (" + progress.percent + " %)…";
    }
    return "Queued for ingestion";
  }

  function duration(seconds) {
    if (seconds < 60) return seconds + " s";
    const minutes = Math.floor(seconds / 60);
    if (minutes < 60) return minutes + " min";
    return Math.floor(minutes / 60) + " h " + (minutes % 60) + " min";
  }

  // ---- choosing files ------------------------------------------------------------------------
  if (form) {
    for (const input of [document.getElementById("upload-files"), document.getElementById("upload-folder")]) {
      input.addEventListener("change", function () {
        enqueue(Array.from(input.files));
        input.value = "";
      });
    }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
    });
    form.addEventListener("dragover", function (event) {
      event.preventDefault();
      form.classList.add("dragover");
    });
    form.addEventListener("dragleave", function (event) {
      if (!form.contains(event.relatedTarget)) form.classList.remove("dragover");
    });
    form.addEventListener("drop", async function (event) {
      event.preventDefault();
      form.classList.remove("dragover");
      enqueue(await droppedFiles(event.dataTransfer));
    });
  }

  // Folders dropped in: walk them (the File System entries API) and take every file inside.
  async function droppedFiles(transfer) {
    const entries = [];
    for (const item of Array.from(transfer.items || [])) {
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry);
    }
    if (!entries.length) return Array.from(transfer.files || []);
    const files = [];
    async function walk(entry) {
      if (entry.isFile) {
        files.push(await new Promise(function (resolve, reject) { entry.file(resolve, reject); }));
      } else if (entry.isDirectory) {
        const reader = entry.createReader();
        for (;;) {
          const batch = await new Promise(function (resolve, reject) { reader.readEntries(resolve, reject); });
          if (!batch.length) break;
          for (const child of batch) await walk(child);
        }
      }
    }
    for (const entry of entries) await walk(entry);
    return files;
  }

  // ---- uploading -----------------------------------------------------------------------------
  function enqueue(files) {
    const limit = Number(form.dataset.maxBytes) * 1024 * 1024;
    for (const file of files) {
      if (file.name.startsWith(".")) continue; // .DS_Store and friends from folders
      const item = document.createElement("li");
      item.className = "upload";
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = file.webkitRelativePath || file.name;
      const percent = document.createElement("span");
      percent.className = "small muted";
      percent.textContent = "waiting";
      const bar = document.createElement("progress");
      bar.max = 100;
      bar.value = 0;
      bar.setAttribute("aria-label", "Upload of " + file.name);
      const detail = document.createElement("span");
      detail.className = "detail";
      item.append(name, percent, bar, detail);
      list.prepend(item);
      if (limit && file.size > limit) {
        reject(item, file.name + " is larger than the " + form.dataset.maxBytes + " MB limit.");
        continue;
      }
      waiting.push({ file: file, item: item });
    }
    pump();
  }

  function reject(item, message) {
    item.classList.add("rejected");
    item.querySelector("progress").remove();
    item.querySelector(".small").textContent = "rejected";
    item.querySelector(".detail").textContent = message;
  }

  function pump() {
    while (running < PARALLEL_UPLOADS && waiting.length) {
      running += 1;
      send(waiting.shift()).finally(function () {
        running -= 1;
        pump();
      });
    }
  }

  function send(job) {
    return new Promise(function (resolve) {
      const data = new FormData();
      data.append("file", job.file, job.file.name);
      const request = new XMLHttpRequest();
      const percent = job.item.querySelector(".small");
      const bar = job.item.querySelector("progress");
      request.open("POST", form.action);
      request.setRequestHeader("Accept", "application/json");
      request.setRequestHeader("X-CSRFToken", csrfToken());
      request.upload.addEventListener("progress", function (event) {
        if (!event.lengthComputable) return;
        const value = Math.round((event.loaded / event.total) * 100);
        bar.value = value;
        percent.textContent = value + "%";
      });
      request.addEventListener("load", function () {
        let body = {};
        try {
          body = JSON.parse(request.responseText);
        } catch (error) {
          body = { error: "The server answered " + request.status + "." };
        }
        if (request.status >= 400 || body.error) {
          reject(job.item, body.error || "Upload failed (" + request.status + ").");
        } else {
          bar.value = 100;
          percent.textContent = body.created ? "uploaded" : "already there";
          job.item.dataset.documentId = body.document.id;
          job.item.querySelector(".detail").textContent = describe(body.document);
          tracked.set(String(body.document.id), job.item);
          poll();
        }
        resolve();
      });
      request.addEventListener("error", function () {
        reject(job.item, "The connection failed during the upload.");
        resolve();
      });
      percent.textContent = "0%";
      request.send(data);
    });
  }

  // ---- live status ---------------------------------------------------------------------------
  let lastDocuments = "";
  let lastCounters = "";
  let lastCollections = "";
  let polling = false;

  async function poll() {
    if (polling || !countersBox) return;
    polling = true;
    try {
      const url = new URL(countersBox.dataset.statusUrl, window.location.href);
      if (form) url.searchParams.set("collection", form.dataset.collection);
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const status = await response.json();
      if (status.counters_html !== lastCounters) {
        countersBox.replaceChildren(fragment(status.counters_html));
        lastCounters = status.counters_html;
      }
      if (collectionsBox && status.collections_html !== lastCollections) {
        collectionsBox.replaceChildren(fragment(status.collections_html));
        lastCollections = status.collections_html;
      }
      if (documentsBox && status.documents_html !== lastDocuments) {
        // Leave the table alone while someone is using a button in it.
        if (!documentsBox.contains(document.activeElement)) {
          documentsBox.replaceChildren(fragment(status.documents_html));
          lastDocuments = status.documents_html;
        }
      }
      for (const [id, item] of tracked) {
        const doc = status.documents[id];
        if (!doc) continue;
        item.querySelector(".detail").textContent = describe(doc);
        item.dataset.status = doc.stalled ? "stalled" : doc.status;
      }
    } catch (error) {
      /* try again on the next tick */
    } finally {
      polling = false;
    }
  }

  if (countersBox) {
    setInterval(function () {
      if (document.visibilityState === "visible") poll();
    }, POLL_MS);
  }
})();
