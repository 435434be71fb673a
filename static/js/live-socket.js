// The live feed's socket, shared by every page that follows it (loaded as a module; CSP stays strict).
// Every event carries a sequence number: each is handed on once, in order; after a (re)connect the
// page fetches what it missed; frames that arrive meanwhile wait for that catch-up. The server ending
// the session stops the retries; anything else reconnects with back-off.

export function followLive({ eventsUrl, bot = "", after = 0, setStatus, onEvent, onCaughtUp }) {
  let cursor = Number(after || 0);
  let retry = 0;

  function apply(event) {
    if (event.seq <= cursor) return; // already handed on (catch-up and socket can overlap)
    cursor = event.seq;
    onEvent(event);
  }

  // A frame is {"events": [...]}: what the hub sent within a few milliseconds, oldest first.
  function applyFrame(frame) {
    (frame.events || []).forEach(apply);
  }

  async function catchUp() {
    // Fetch in pages until we hold everything after our cursor.
    for (;;) {
      const url = `${eventsUrl}?after=${cursor}` + (bot ? `&bot=${bot}` : "");
      const response = await fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } });
      if (!response.ok) throw new Error(`catch-up failed: ${response.status}`);
      const body = await response.json();
      body.events.forEach(apply);
      if (body.events.length < 500) return;
    }
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const socket = new WebSocket(`${scheme}://${location.host}/ws/live/` + (bot ? `?bot=${bot}` : ""));
    setStatus("Connecting…", "connecting");
    // Frames that arrive while the catch-up runs wait for it: applied first, their higher sequence
    // numbers would move the cursor past the rows the catch-up is about to return.
    let held = [];
    socket.addEventListener("open", async () => {
      retry = 0;
      try {
        await catchUp();
        if (onCaughtUp) await onCaughtUp();
        setStatus("Live", "live");
      } catch (error) {
        setStatus("Live (catch-up failed)", "degraded");
      }
      const waiting = held;
      held = null;
      waiting.forEach(applyFrame);
    });
    socket.addEventListener("message", (message) => {
      const frame = JSON.parse(message.data);
      if (held) held.push(frame);
      else applyFrame(frame);
    });
    socket.addEventListener("close", (closed) => {
      if (closed.code === 4001 || closed.code === 4003) {
        // The server ended this session (logout, timeout, deactivation): retrying cannot help.
        setStatus("Session ended: reload the page to log in again", "down");
        return;
      }
      // Back off 1, 2, 4 … 30 s so a console left open does not hammer a server that is down.
      const delay = Math.min(30000, 1000 * 2 ** retry);
      retry += 1;
      setStatus(`Reconnecting in ${Math.round(delay / 1000)} s…`, "down");
      setTimeout(connect, delay);
    });
  }

  connect();
}
