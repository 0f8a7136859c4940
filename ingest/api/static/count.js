/* Tally: count one page view from a web page, without a token (docs/api.md, "From a web page").

   <script src="https://tally.example.com/v1/count.js" data-counter="pageviews" async></script>

   data-counter: a counter listed in TALLY_PUBLIC_COUNTERS (default "pageviews");
   data-key: what to count (default: location.pathname, at most 256 characters).
   The event id is made once per page view, so a resent beacon counts once. */
(function () {
  "use strict";
  var script = document.currentScript;
  if (!script) return;
  var endpoint = script.src.replace(/\/count\.js(?:[?#].*)?$/, "/public/events");

  function eventId() {
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);  // crypto.randomUUID needs a secure context; this does not
    return Array.prototype.map.call(bytes, function (b) {
      return (b + 256).toString(16).slice(1);
    }).join("");
  }

  var body = JSON.stringify({
    counter: script.getAttribute("data-counter") || "pageviews",
    key: (script.getAttribute("data-key") || location.pathname || "/").slice(0, 256),
    id: eventId()
  });
  // text/plain: a "simple" request, sent without a CORS preflight and even as the page closes.
  var queued = navigator.sendBeacon && navigator.sendBeacon(endpoint, body);
  if (!queued) {  // beacon refused (too large a queue, or none): the same body, so the same id
    fetch(endpoint, {method: "POST", body: body, keepalive: true, credentials: "omit",
                     headers: {"Content-Type": "text/plain"}}).catch(function () {});
  }
})();
