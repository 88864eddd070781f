// Live updates of a project page: while it is shown, the recent jobs'
// rows are fetched again every two seconds from the same origin and put in
// place, so a running job turns to its end without a reload. Without this
// script the page reads the same, as of its loading. When the session has
// ended, the page is replaced by the sign-in form.
"use strict";
(function () {
  var rows = document.getElementById("jobs");
  if (!rows || !rows.dataset.live) {
    return;
  }
  var source = rows.dataset.live;
  function refresh() {
    if (document.hidden) {
      return;
    }
    fetch(source, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        // Sent to the sign-in form: the session ended, so the page goes
        // there too rather than showing the form among the rows.
        if (response.redirected) {
          window.location.assign(response.url);
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (text) {
        if (text !== null) {
          rows.innerHTML = text;
        }
      })
      .catch(function () {});
  }
  window.setInterval(refresh, 2000);
})();
