// pymate-relay's web viewer, first script: opens the session's WebSocket while the terminal's
// (larger) script is still on its way, and keeps what arrives until app.js takes the socket.
(function () {
  "use strict";
  var scheme = location.protocol === "https:" ? "wss://" : "ws://";
  var ws = new WebSocket(scheme + location.host + location.pathname);
  ws.binaryType = "arraybuffer";
  var early = { socket: ws, events: [] };
  function keep(ev) { early.events.push(ev); }
  ws.onopen = keep;
  ws.onmessage = keep;
  ws.onclose = keep;
  window.pymateEarly = early;
})();
