// Leasehold console: confirmations, and live regions refreshed from server-sent events.
"use strict";

document.addEventListener("submit", (event) => {
  const message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

// <section data-live-src="/licenses/ID/fragment" data-live-stream="/v1/events/stream?license_id=ID">
for (const region of document.querySelectorAll("[data-live-src]")) {
  // One fetch at a time; an event that arrives during a fetch asks for one more
  // afterwards, because the fetch in flight may have read the state before it.
  let running = false;
  let again = false;
  const refresh = async () => {
    if (running) {
      again = true;
      return;
    }
    running = true;
    try {
      do {
        again = false;
        const response = await fetch(region.dataset.liveSrc, { credentials: "same-origin", cache: "no-store" });
        if (response.ok) {
          region.innerHTML = await response.text();
          region.setAttribute("data-live-updated", String(Date.now()));
        }
      } while (again);
    } catch (_) {
      // The next event or reconnect refreshes again.
    } finally {
      running = false;
    }
  };
  // EventSource reconnects by itself after a network drop; refresh on every (re)connect.
  const source = new EventSource(region.dataset.liveStream, { withCredentials: true });
  source.addEventListener("ready", refresh);
  source.addEventListener("seat", refresh);
  source.addEventListener("lagged", refresh);
  region.setAttribute("data-live", "connecting");
  source.onopen = () => region.setAttribute("data-live", "open");
  source.onerror = () => region.setAttribute("data-live", "reconnecting");
}
