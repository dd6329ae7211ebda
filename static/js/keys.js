// The API keys page: copy a newly created key to the clipboard. Without script (or where the
// clipboard is refused) the key stays selectable in its read-only field.
(function () {
  "use strict";

  const status = document.getElementById("copy-status");

  function say(text) {
    if (status) status.textContent = text;
  }

  // Plain http on an intranet host is not a secure context, so navigator.clipboard is missing
  // there; selecting the field and copying still works in every browser.
  function copyBySelection(field) {
    field.focus();
    field.select();
    try {
      return document.execCommand("copy");
    } catch (error) {
      return false;
    }
  }

  for (const button of document.querySelectorAll("[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field) continue;
    button.hidden = false;
    button.addEventListener("click", async function () {
      let copied = false;
      if (navigator.clipboard && window.isSecureContext) {
        try {
          await navigator.clipboard.writeText(field.value);
          copied = true;
        } catch (error) {
          copied = false;
        }
      }
      if (!copied) copied = copyBySelection(field);
      say(copied ? "Copied to the clipboard." : "Select the key and copy it (Ctrl+C / Cmd+C).");
      if (!copied) field.select();
    });
  }
  // Selecting the whole key on focus makes a manual copy one keystroke.
  for (const field of document.querySelectorAll(".key-value")) {
    field.addEventListener("focus", function () { field.select(); });
  }
})();
