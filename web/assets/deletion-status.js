// The page the final erasure email links to (P-16): the user was deleted when the
// stores were told to erase, so this link is how they follow the stages that remain
// and get the certificate. The secret is read from the fragment (never sent to a server
// in a URL, a log or a Referer), taken out of the address bar at once (the browser's
// history list still records the visit: the link expires 90 days after the deletion is
// complete), kept in memory for a retry, and posted to the deletion API, which only
// reads: showing the page changes nothing.
(function () {
  "use strict";
  var result = document.getElementById("status-result");
  var retry = document.getElementById("status-retry");
  if (!result || !retry) return;
  var token = new URLSearchParams(location.hash.slice(1)).get("token");
  history.replaceState(null, "", location.pathname);

  var STAGES = {
    requested: "Requested",
    grace: "Grace period, in which you could cancel",
    holds: "Checks before erasing",
    erasing: "Erasing from our active systems",
    shredded: "Your key destroyed: your details unreadable in every backup",
    backups_pending: "Waiting for the last backup that holds them to expire",
    complete: "Complete: checked everywhere, certificate recorded",
    cancelled: "Cancelled",
    paused: "Paused by a legal hold",
    escalated: "Delayed: our staff are looking into it"
  };
  var MONTHS = ["January", "February", "March", "April", "May", "June", "July",
    "August", "September", "October", "November", "December"];

  function day(iso) {
    if (!iso) return "";
    var d = new Date(iso);
    return d.getUTCDate() + " " + MONTHS[d.getUTCMonth()] + " " + d.getUTCFullYear();
  }

  // The live region says what happened, so a screen reader announces it.
  function show(text, ok) {
    result.textContent = text;
    result.className = ok ? "result ok" : "result refused";
  }

  function cell(row, text) {
    var td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
  }

  function render(answer) {
    var status = answer.status;
    document.getElementById("status-reference").textContent = status.request_id;
    var body = document.getElementById("status-stages");
    body.textContent = "";
    status.stages.forEach(function (s) {
      var row = document.createElement("tr");
      var th = document.createElement("th");
      th.scope = "row";
      th.textContent = STAGES[s.stage] || s.stage;
      row.appendChild(th);
      cell(row, day(s.done_at));
      cell(row, s.done_at ? "" : day(s.expected_by));
      body.appendChild(row);
    });
    document.getElementById("status").hidden = false;
    if (answer.certificate) {
      document.getElementById("certificate-digest").textContent = answer.certificate.digest;
      document.getElementById("certificate-body").textContent =
        JSON.stringify(answer.certificate.certificate, null, 2);
      document.getElementById("certificate").hidden = false;
    }
    var late = status.overdue && (status.overdue.gdpr || status.overdue.ccpa);
    show("Now: " + (STAGES[status.stage] || status.stage) + "." +
      (late ? " It is later than the law allows; we are told of it and working on it." : ""),
      true);
  }

  // A refused link stays refused; anything else (a restart, a rate limit, the network)
  // is worth another try, with the secret this page still holds.
  function failed(text) {
    show(text, false);
    retry.hidden = false;
    retry.focus();
  }

  function look() {
    retry.hidden = true;
    show("Looking up your deletion...", true);
    fetch("/api/deletion/status-links", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ token: token })
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (answer) {
        if (response.ok) return render(answer);
        var said = answer.detail || answer.title || "This did not work.";
        if (response.status === 400 || response.status === 422) return show(said, false);
        failed(said + " Try again in a moment.");
      });
    }).catch(function () {
      failed("We could not reach iMT. Check your connection and try again.");
    });
  }

  if (!token) {
    show("For your safety this page forgot the link once it was opened. " +
      "Open it again from the email we sent you.", false);
    return;
  }
  retry.addEventListener("click", look);
  look();
})();
