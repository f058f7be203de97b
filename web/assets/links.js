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

  function show(text, ok) {
    result.textContent = text;
    result.className = ok ? "result ok" : "result refused";
  }

  if (!token) {
    form.hidden = true;
    show("This link is incomplete. Open it again from the email we sent you.", false);
    return;
  }

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
        show(form.dataset.done, true);
        return;
      }
      return response.json().then(function (problem) {
        show(problem.detail || problem.title || "This did not work.", false);
        // A refused password can be corrected; a spent or expired link cannot.
        button.disabled = !password || response.status !== 422;
      });
    }).catch(function () {
      button.disabled = false;
      show("We could not reach iMT. Check your connection and try again.", false);
    });
  });
})();
