// Leasehold console: confirmations, and live regions refreshed from server-sent events.
"use strict";

document.addEventListener("submit", (event) => {
  const message = event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) event.preventDefault();
});

// <section data-live-src="/licenses/ID/fragment" data-live-stream="/v1/events/stream?license_id=ID">
for (const region of document.querySelectorAll("[data-live-src]")) {
  let pending = false;
  const refresh = async () => {
    if (pending) return;
    pending = true;
    try {
      const response = await fetch(region.dataset.liveSrc, { credentials: "same-origin", cache: "no-store" });
      if (response.ok) {
        region.innerHTML = await response.text();
        region.setAttribute("data-live-updated", String(Date.now()));
      }
    } finally {
      pending = false;
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
