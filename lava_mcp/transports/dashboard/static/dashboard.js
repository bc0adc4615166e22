// The dashboard's only script (served from this server; no library, no network).
// 1. Copy buttons: <button data-copy="#element-id"> copies that element's text.
// 2. A page answering a form post (a new secret, a funding result) replaces its history
//    entry with a plain GET of the same page, so reloading never posts the form again
//    and never shows a secret twice.
"use strict";
document.addEventListener("click", async (event) => {
  const button = event.target.closest("button[data-copy]");
  if (!button) return;
  const source = document.querySelector(button.dataset.copy);
  if (!source) return;
  const text = source.textContent.trim();
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    const range = document.createRange();
    range.selectNodeContents(source);
    const selection = window.getSelection();
    selection.removeAllRanges();
    selection.addRange(range);
    document.execCommand("copy");
  }
  const label = button.textContent;
  button.textContent = "Copied";
  setTimeout(() => { button.textContent = label; }, 1500);
});
if (document.body && document.body.dataset.posted === "true" && window.history.replaceState) {
  window.history.replaceState(null, "", document.body.dataset.canonical || window.location.pathname);
}
