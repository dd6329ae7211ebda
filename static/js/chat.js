// The chat page: send a question, stream the answer in as text, then swap in the server's
// sanitised rendering. Text from documents or the model is only ever inserted as text nodes.
(function () {
  "use strict";

  const form = document.getElementById("ask-form");
  const question = document.getElementById("ask-question");
  const send = document.getElementById("ask-send");
  const thread = document.getElementById("thread");
  const scroller = document.getElementById("chat-scroll");
  const dialog = document.getElementById("source-dialog");
  const dialogBody = document.getElementById("source-dialog-body");
  const conversationList = document.getElementById("conversation-list");
  let busy = false;

  function csrfToken() {
    const input = document.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function scrollToEnd() {
    scroller.scrollTop = scroller.scrollHeight;
  }

  // Server-rendered fragments (our own templates, escaped there) become DOM nodes.
  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content;
  }

  // ---- sidebar on phones -------------------------------------------------------------------
  const toggle = document.querySelector("[data-sidebar-toggle]");
  const sidebar = document.getElementById("sidebar");
  if (toggle && sidebar) {
    toggle.addEventListener("click", function () {
      const open = sidebar.classList.toggle("open");
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
    });
  }

  // ---- composing -----------------------------------------------------------------------------
  function autosize() {
    question.style.height = "auto";
    question.style.height = Math.min(question.scrollHeight + 2, 220) + "px";
  }
  question.addEventListener("input", autosize);
  question.addEventListener("keydown", function (event) {
    // Enter sends, Shift+Enter is a new line, Ctrl/Cmd+Enter sends too.
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  // ---- the model: say before sending when the answer would come from an external one ---------
  const modelSelect = document.getElementById("ask-model");
  const modelNotice = document.getElementById("model-notice");
  const collectionSelect = document.getElementById("ask-collection");
  function externalModel() {
    if (!modelSelect) return null;
    let option = modelSelect.selectedOptions[0];
    if (option && !option.value && collectionSelect) {
      // "Default": the collection's default model, when it names one.
      const chosen = collectionSelect.selectedOptions[0];
      const name = chosen ? chosen.dataset.defaultModel : "";
      option = name ? modelSelect.querySelector('option[value="' + CSS.escape(name) + '"]') : null;
    }
    return option && option.dataset.external ? option.dataset.label : null;
  }
  function updateNotice() {
    if (!modelNotice) return;
    const label = externalModel();
    modelNotice.hidden = !label;
    if (label) modelNotice.querySelector("[data-notice-model]").textContent = label;
  }
  if (modelSelect) modelSelect.addEventListener("change", updateNotice);
  if (collectionSelect) collectionSelect.addEventListener("change", updateNotice);
  updateNotice();

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    if (busy || !question.value.trim()) return;
    ask(new FormData(form));
  });

  function addQuestion(text) {
    const empty = document.getElementById("empty-state");
    if (empty) empty.remove();
    const node = document.getElementById("tpl-question").content.firstElementChild.cloneNode(true);
    node.querySelector(".bubble").textContent = text;
    thread.appendChild(node);
    const answer = document.getElementById("tpl-answer").content.firstElementChild.cloneNode(true);
    thread.appendChild(answer);
    scrollToEnd();
    return answer;
  }

  function showError(article, message) {
    const body = article.querySelector(".answer-body");
    body.classList.remove("streaming");
    const notice = document.createElement("p");
    notice.className = "notice notice-error";
    notice.setAttribute("role", "alert");
    notice.textContent = message;
    body.replaceChildren(notice);
    article.removeAttribute("aria-busy");
  }

  async function replaceWithServerRendering(article, url) {
    if (!url) return false;
    try {
      const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
      if (!response.ok) return false;
      const nodes = fragment(await response.text());
      article.replaceWith(nodes);
      return true;
    } catch (error) {
      return false;
    }
  }

  async function refreshConversations(currentId) {
    if (!conversationList) return;
    try {
      const url = conversationList.dataset.url + "?current=" + encodeURIComponent(currentId);
      const response = await fetch(url, { credentials: "same-origin" });
      if (response.ok) conversationList.replaceChildren(fragment(await response.text()));
    } catch (error) {
      /* the list refreshes on the next page load */
    }
  }

  function parseEvent(block) {
    let kind = "message";
    const data = [];
    for (const line of block.split("\n")) {
      if (line.startsWith("event:")) kind = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
    }
    return { kind: kind, data: data.length ? JSON.parse(data.join("\n")) : {} };
  }

  async function ask(body) {
    busy = true;
    send.disabled = true;
    const text = question.value.trim();
    question.value = "";
    autosize();
    const article = addQuestion(text);
    const answerBody = article.querySelector(".answer-body");
    let finished = false;
    let conversationId = null;
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: body,
        credentials: "same-origin",
        headers: { Accept: "text/event-stream", "X-CSRFToken": csrfToken() },
      });
      if (!response.ok) {
        const reason = response.status === 400 ? await response.text() : "";
        showError(article, reason || "The question could not be sent (" + response.status + "). Reload the page and try again.");
        return;
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) !== -1) {
          const event = parseEvent(buffer.slice(0, cut));
          buffer = buffer.slice(cut + 2);
          if (event.kind === "meta") {
            conversationId = event.data.conversation_id;
            form.elements.conversation.value = conversationId;
            article.id = "m" + event.data.message_id;
            history.replaceState(null, "", "/c/" + conversationId + "/");
          } else if (event.kind === "token") {
            // "Thinking…" stays until the first words arrive (a reasoning model may think long).
            const thinking = answerBody.querySelector("[data-thinking]");
            if (thinking) thinking.remove();
            answerBody.appendChild(document.createTextNode(event.data.text));
            scrollToEnd();
          } else if (event.kind === "done" || event.kind === "error") {
            finished = true;
            const swapped = await replaceWithServerRendering(article, event.data.fragment_url);
            if (!swapped && event.kind === "error") showError(article, event.data.message);
            if (!swapped && event.kind === "done") {
              answerBody.classList.remove("streaming");
              article.removeAttribute("aria-busy");
            }
          }
        }
      }
      if (!finished) showError(article, "The answer was cut off. Try again.");
    } catch (error) {
      showError(article, "The connection was lost while answering. Try again.");
    } finally {
      busy = false;
      send.disabled = false;
      if (conversationId) refreshConversations(conversationId);
      scrollToEnd();
      question.focus();
    }
  }

  // ---- answer actions: copy, feedback ------------------------------------------------------------
  document.addEventListener("click", async function (event) {
    const copy = event.target.closest("[data-copy]");
    if (!copy) return;
    const body = copy.closest("article").querySelector(".answer-body");
    const text = body.innerText.trim();
    try {
      await navigator.clipboard.writeText(text);
    } catch (error) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("aria-hidden", "true");
      document.body.appendChild(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    const label = copy.querySelector("[data-copy-label]");
    label.textContent = "Copied";
    setTimeout(function () { label.textContent = "Copy"; }, 1500);
  });

  document.addEventListener("submit", async function (event) {
    const target = event.target;
    if (target.matches("[data-confirm]")) {
      if (!window.confirm(target.dataset.confirm)) event.preventDefault();
      return;
    }
    if (!target.matches("[data-feedback]")) return;
    event.preventDefault();
    const response = await fetch(target.action, {
      method: "POST",
      body: new FormData(target),
      credentials: "same-origin",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
    });
    if (!response.ok) return;
    const result = await response.json();
    const article = target.closest("article");
    for (const other of article.querySelectorAll("[data-feedback]")) {
      const button = other.querySelector("button");
      const value = Number(button.dataset.value);
      const pressed = value === result.feedback;
      button.setAttribute("aria-pressed", pressed ? "true" : "false");
      other.elements.value.value = pressed ? "0" : String(value);
    }
  });

  // ---- sources open in a dialog (a plain link without script) --------------------------------
  document.addEventListener("click", async function (event) {
    const link = event.target.closest("a.cite, a.source-link");
    if (!link || event.ctrlKey || event.metaKey || event.shiftKey || event.button !== 0) return;
    event.preventDefault();
    try {
      const url = new URL(link.getAttribute("href"), window.location.href);
      url.searchParams.set("partial", "1");
      const response = await fetch(url, { credentials: "same-origin" });
      if (!response.ok) throw new Error(String(response.status));
      dialogBody.replaceChildren(fragment(await response.text()));
      dialog.showModal();
      const viewer = dialogBody.querySelector("[data-pdf-viewer]");
      if (viewer) {
        // A PDF passage is shown on its page: the viewer module renders it in the dialog.
        import(viewer.dataset.module).then(
          function (module) { module.mountAll(dialogBody); },
          function () { viewer.querySelector("[data-pdf-message]").hidden = false; },
        );
        return;
      }
      const mark = dialogBody.querySelector("mark");
      if (mark) mark.scrollIntoView({ block: "center" });
    } catch (error) {
      window.location.href = link.href;
    }
  });
  for (const button of document.querySelectorAll("[data-close-dialog]")) {
    button.addEventListener("click", function () { dialog.close(); });
  }
  dialog.addEventListener("click", function (event) {
    if (event.target === dialog) dialog.close(); // a click on the backdrop
  });

  scrollToEnd();
})();
