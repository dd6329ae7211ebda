// The PDF citation viewer: the cited page rendered by pdf.js (vendored, static/vendor/pdfjs/),
// the passage highlighted on it, previous/next page. Mounted on every [data-pdf-viewer] element:
// on the source page when this module loads, in the chat's source dialog by chat.js (mountAll).
// Where the passage is comes from the server (data-boxes: [page, left, top, right, bottom] as
// shares of the page); without boxes, text-layer lines that are part of the passage are marked.
// The PDF comes from the permission-checked download address (data-url), never a public one.
import * as pdfjs from "../vendor/pdfjs/pdf.min.mjs";

pdfjs.GlobalWorkerOptions.workerSrc = new URL(
  "../vendor/pdfjs/pdf.worker.min.mjs",
  import.meta.url,
).href;

const STYLESHEETS = ["../vendor/pdfjs/text_layer.css", "../css/pdfview.css"];
const MAX_SCALE = 2;
const MIN_MATCH_CHARS = 4; // shorter text-layer pieces ("a", "12") match any passage
const EDGE = 0.004; // a line's centre this close outside a box still counts as inside

function stylesheetsLoaded() {
  return Promise.all(
    STYLESHEETS.map(function (path) {
      const href = new URL(path, import.meta.url).href;
      const existing = Array.from(document.querySelectorAll("link[rel=stylesheet]")).find(
        function (link) { return link.href === href; },
      );
      if (existing && existing.sheet) return Promise.resolve();
      const link = existing || document.createElement("link");
      const loaded = new Promise(function (resolve) {
        link.addEventListener("load", resolve, { once: true });
        link.addEventListener("error", resolve, { once: true });
      });
      if (!existing) {
        link.rel = "stylesheet";
        link.href = href;
        document.head.append(link);
      }
      return loaded;
    }),
  );
}

function words(text) {
  return text.toLowerCase().replace(/\s+/g, " ").trim();
}

function parseBoxes(value) {
  try {
    const boxes = JSON.parse(value || "[]");
    return Array.isArray(boxes) ? boxes.filter(function (b) { return b.length === 5; }) : [];
  } catch (error) {
    return [];
  }
}

class Viewer {
  constructor(root) {
    this.root = root;
    this.stage = root.querySelector("[data-pdf-stage]");
    this.status = root.querySelector("[data-pdf-status]");
    this.previous = root.querySelector("[data-pdf-previous]");
    this.next = root.querySelector("[data-pdf-next]");
    this.message = root.querySelector("[data-pdf-message]");
    this.boxes = parseBoxes(root.dataset.boxes);
    const source = root.closest("[data-source]");
    const passage = source && source.querySelector("mark");
    this.passage = words(passage ? passage.textContent : "");
    this.pageNumber = Number(root.dataset.page) || 1;
    this.pdf = null;
    this.rendering = null;
    this.shown = 0; // counts show() calls: a page finishing after a later click is dropped
    this.scrolled = false;
    this.previous.addEventListener("click", () => this.show(this.pageNumber - 1));
    this.next.addEventListener("click", () => this.show(this.pageNumber + 1));
  }

  async open() {
    try {
      await stylesheetsLoaded();
      this.pdf = await pdfjs.getDocument({
        url: this.root.dataset.url,
        // One plain request through the download view: no range requests, no streaming.
        disableRange: true,
        disableStream: true,
        disableAutoFetch: true,
        verbosity: pdfjs.VerbosityLevel.ERRORS,
      }).promise;
    } catch (error) {
      this.fail();
      return;
    }
    await this.show(Math.min(Math.max(this.pageNumber, 1), this.pdf.numPages));
  }

  fail() {
    this.message.hidden = false;
    this.root.dataset.state = "failed";
  }

  async show(number) {
    if (!this.pdf || number < 1 || number > this.pdf.numPages) return;
    if (this.rendering) {
      this.rendering.cancel();
      await this.rendering.promise.catch(function () {});
    }
    const ticket = ++this.shown;
    this.pageNumber = number;
    this.root.dataset.state = "rendering";
    this.previous.disabled = number <= 1;
    this.next.disabled = number >= this.pdf.numPages;
    this.status.textContent = `Page ${number} of ${this.pdf.numPages}`;
    try {
      await this.render(await this.pdf.getPage(number), ticket);
    } catch (error) {
      if (error instanceof pdfjs.RenderingCancelledException) return;
      this.fail();
      return;
    }
    if (ticket !== this.shown) return;
    this.root.dataset.renderedPage = String(number);
    this.root.dataset.state = "ready";
  }

  async render(page, ticket) {
    const unscaled = page.getViewport({ scale: 1 });
    const width = Math.max(this.stage.clientWidth, 200);
    const viewport = page.getViewport({ scale: Math.min(width / unscaled.width, MAX_SCALE) });
    const ratio = window.devicePixelRatio || 1;

    const sheet = document.createElement("div");
    sheet.className = "pdf-page";
    sheet.style.width = `${Math.floor(viewport.width)}px`;
    sheet.style.height = `${Math.floor(viewport.height)}px`;
    sheet.style.setProperty("--scale-factor", String(viewport.scale));
    sheet.style.setProperty("--total-scale-factor", String(viewport.scale));
    const canvas = document.createElement("canvas");
    canvas.width = Math.floor(viewport.width * ratio);
    canvas.height = Math.floor(viewport.height * ratio);
    const highlights = document.createElement("div");
    highlights.className = "pdf-highlights";
    const textLayer = document.createElement("div");
    textLayer.className = "textLayer";
    sheet.append(canvas, highlights, textLayer);

    this.rendering = page.render({
      canvas,
      viewport,
      transform: ratio === 1 ? null : [ratio, 0, 0, ratio, 0, 0],
    });
    await this.rendering.promise;
    this.rendering = null;
    if (ticket !== this.shown) return;
    const layer = new pdfjs.TextLayer({
      textContentSource: page.streamTextContent(),
      container: textLayer,
      viewport,
    });
    await layer.render();
    if (ticket !== this.shown) return;
    this.stage.replaceChildren(sheet);
    this.highlight(page.pageNumber, sheet, highlights, layer.textDivs);
  }

  highlight(number, sheet, highlights, spans) {
    const area = sheet.getBoundingClientRect();
    const boxes = this.boxes.filter(function (box) { return box[0] === number; });
    const marked = [];
    for (const span of spans) {
      const text = span.textContent;
      if (!text.trim()) continue;
      const rect = span.getBoundingClientRect();
      const x = (rect.left + rect.width / 2 - area.left) / area.width;
      const y = (rect.top + rect.height / 2 - area.top) / area.height;
      const inside = this.boxes.length
        ? boxes.some(function (box) {
          return x >= box[1] - EDGE && x <= box[3] + EDGE && y >= box[2] - EDGE && y <= box[4] + EDGE;
        })
        : words(text).length >= MIN_MATCH_CHARS && this.passage.includes(words(text));
      if (!inside) continue;
      span.classList.add("pdf-cited");
      marked.push([
        (rect.left - area.left) / area.width,
        (rect.top - area.top) / area.height,
        (rect.right - area.left) / area.width,
        (rect.bottom - area.top) / area.height,
      ]);
    }
    // Drawn from the stored boxes; matched text lines stand in for them when there are none.
    const drawn = this.boxes.length ? boxes.map(function (box) { return box.slice(1); }) : marked;
    for (const [left, top, right, bottom] of drawn) {
      const mark = document.createElement("div");
      mark.className = "pdf-highlight";
      mark.dataset.pdfHighlight = "";
      mark.style.left = `${left * 100}%`;
      mark.style.top = `${top * 100}%`;
      mark.style.width = `${(right - left) * 100}%`;
      mark.style.height = `${(bottom - top) * 100}%`;
      highlights.append(mark);
    }
    const first = highlights.firstElementChild;
    if (first && !this.scrolled) {
      this.scrolled = true;
      first.scrollIntoView({ block: "center" });
    }
  }
}

export function mountAll(container) {
  for (const root of container.querySelectorAll("[data-pdf-viewer]")) {
    if (root.dataset.mounted) continue;
    root.dataset.mounted = "true";
    new Viewer(root).open();
  }
}

mountAll(document);
