// The pages that links in our emails open. Each reads its one-time token from the
// address's fragment (a fragment never reaches a server, a log or a Referer), takes it
// out of the address bar at once, and sends it to the accounts API only when the
// person confirms: opening a link (or a mail scanner fetching it) changes nothing.
(function () {
  "use strict";
  var form = document.getElementById("link-form");
  var result = document.getElementById("link-result");
  if (!form || !result) return;
  var token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname);

  var USED = "This link was already used: what it asked for is done.";

  function show(text, ok) {
    result.textContent = text;
    result.className = ok ? "result ok" : "result refused";
  }
  // Where keyboard focus goes once the focused button is hidden or disabled (else it
  // falls back to the page's start); focusable by script only.
  result.tabIndex = -1;

  if (!token) {
    show("This link is incomplete. Open it again from the email we sent you.", false);
    return;
  }
  form.hidden = false;  // hidden until here: without this script it would post nothing

  form.addEventListener("submit", function (event) {
    event.preventDefault();
    var body = { token: token };
    var password = form.elements.namedItem("new_password");
    if (password) body.new_password = password.value;
    var button = form.querySelector("button");
    button.disabled = true;
    fetch(form.dataset.api, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body)
    }).then(function (response) {
      if (response.ok) {
        form.hidden = true;
        return response.text().then(function (text) {
          var answer = text ? JSON.parse(text) : {};
          // Confirmed, but not yet usable (under 13: a guardian must consent too).
          var pending = answer.active === false && form.dataset.pending;
          show(pending || form.dataset.done, true);
          result.focus();
        });
      }
      return response.json().catch(function () { return {}; }).then(function (problem) {
        if (response.status === 409 && /\/link-used$/.test(problem.type || "")) {
          // Done already: a retry whose answer was lost, or a second tab. What was done
          // is said (the answer's detail), as a success, not as a refused link.
          form.hidden = true;
          show(problem.detail || USED, true);
          result.focus();
          return;
        }
        show(problem.detail || problem.title || "This did not work. Try again.", false);
        // A spent, expired or refused link stays refused; a password can be corrected,
        // and anything else (a restart, a rate limit) is worth another try.
        var final = response.status === 400 || response.status === 409 ||
          (response.status === 422 && !password);
        button.disabled = final;
        if (final) result.focus();
      });
    }).catch(function () {
      button.disabled = false;
      show("We could not reach iMT. Check your connection and try again.", false);
    });
  });
})();
