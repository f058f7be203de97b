// Counts this page view, anonymously: no cookie, no storage, no identifier. The
// collector drops the visit when the browser sends Do Not Track or Global Privacy
// Control, so nothing here needs to check them.
(function () {
  "use strict";
  if (!navigator.sendBeacon || !window.crypto || !crypto.randomUUID) return;
  var beacon = {
    beacon_id: crypto.randomUUID(),
    site: location.hostname,  // the host name alone: a port is no part of the site
    page: location.pathname,
    referrer: referrerOrigin(),
    device_class: /Mobi/.test(navigator.userAgent) ? "mobile" : "desktop",
    load_time_ms: Math.round(performance.now())
  };
  navigator.sendBeacon("/api/analytics/beacon", JSON.stringify(beacon));

  // Only where the visitor came from, not which page: a webmail's address names a
  // mailbox and a message. The collector keeps the host alone anyway.
  function referrerOrigin() {
    if (!document.referrer) return null;
    try {
      return new URL(document.referrer).origin;
    } catch (e) {
      return null;
    }
  }
})();
