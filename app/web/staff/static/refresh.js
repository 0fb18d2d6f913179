// A page that shows work still running ([data-refresh="SECONDS"]) asks for itself again
// every few seconds: it reloads once its [data-status] changed, and until then puts the
// fresh progress line (.progress-line: "parts read", a <progress> bar) in place of its
// own. Without this script, the page's "Refresh" link does the same.
(function () {
  "use strict";
  var box = document.querySelector("[data-refresh]");
  if (!box) return;
  var seconds = Math.max(2, parseInt(box.getAttribute("data-refresh"), 10) || 3);
  var status = box.getAttribute("data-status");
  function poll() {
    fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (answer) { return answer.ok ? answer.text() : ""; })
      .then(function (html) {
        var found = /data-status="([a-z]+)"/.exec(html);
        if (found && found[1] !== status) {
          window.location.reload();
          return;
        }
        var line = document.querySelector(".progress-line");
        if (line && html) {
          var fresh = new DOMParser().parseFromString(html, "text/html").querySelector(".progress-line");
          if (fresh) line.replaceWith(document.importNode(fresh, true));
        }
        window.setTimeout(poll, seconds * 1000);
      })
      .catch(function () { window.setTimeout(poll, seconds * 1000); });
  }
  window.setTimeout(poll, seconds * 1000);
})();
