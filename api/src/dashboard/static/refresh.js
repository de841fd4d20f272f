// upkeep dashboard: live refresh without a build step.
// Every N seconds (main[data-refresh]) the page is fetched again and <main> is replaced,
// unless the tab is hidden or the keyboard focus is inside <main> (so a refresh never takes
// a button away from someone about to press it). No inline script: the CSP forbids it.
(function () {
  "use strict";
  var main = document.querySelector("main[data-refresh]");
  if (!main || !window.fetch || !window.DOMParser) {
    return;
  }
  var seconds = parseInt(main.getAttribute("data-refresh"), 10) || 30;
  function refresh() {
    if (document.hidden || main.contains(document.activeElement)) {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", redirect: "manual" })
      .then(function (response) {
        if (response.type === "opaqueredirect" || response.status === 303) {
          window.location.assign("/login");
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (!html) {
          return;
        }
        var fresh = new DOMParser().parseFromString(html, "text/html").querySelector("main");
        if (fresh) {
          main.replaceChildren.apply(main, Array.prototype.slice.call(fresh.childNodes));
        }
      })
      .catch(function () {
        // Offline for a moment: the next tick tries again.
      });
  }
  window.setInterval(refresh, seconds * 1000);
})();
