// pymate-relay's web viewer: one xterm.js terminal on the session's WebSocket.
// Binary messages in are the session's frames (what an ssh viewer gets); text messages are
// {"joined": {"readonly": r}}, then {"end": line}, or {"error": line}. Out: keystrokes as
// binary, the size as {"cols", "rows"}. A read-only page sends its size (the relay draws at that
// size) and no keys.
(function () {
  "use strict";
  var readonly = true; // until the relay says otherwise
  var statusBox = document.getElementById("status");
  // socket.js opened the socket (its connection is a jailed process on the relay) while this
  // script loaded; what it kept is handled below, in order.
  var early = window.pymateEarly;
  var ws = early.socket;

  var term = new Terminal({ scrollback: 0, disableStdin: readonly, allowProposedApi: false });
  var fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(document.getElementById("terminal"));
  fit.fit();
  var ended = false;
  var encoder = new TextEncoder();

  function end(line) {
    if (ended) return;
    ended = true;
    statusBox.textContent = line;
    statusBox.hidden = false;
    document.body.classList.add("ended");
    document.title = "tmate session: " + line;
  }
  function sendSize() {
    if (ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ cols: term.cols, rows: term.rows }));
  }
  function sendKeys(bytes) {
    if (!readonly && ws.readyState === WebSocket.OPEN) ws.send(bytes);
  }

  function onOpen() {
    sendSize();
    term.focus();
  }
  function onMessage(ev) {
    if (typeof ev.data === "string") {
      var msg = JSON.parse(ev.data);
      if (msg.joined) {
        readonly = msg.joined.readonly === true;
        term.options.disableStdin = readonly;
        return;
      }
      end(msg.end || msg.error || "session ended");
      return;
    }
    term.write(new Uint8Array(ev.data));
  }
  function onClose() { end("Connection closed"); }
  var handlers = { open: onOpen, message: onMessage, close: onClose };
  early.events.forEach(function (ev) { handlers[ev.type](ev); });
  ws.onopen = onOpen;
  ws.onmessage = onMessage;
  ws.onclose = onClose;
  term.onData(function (data) { sendKeys(encoder.encode(data)); });
  term.onBinary(function (data) {
    var bytes = new Uint8Array(data.length);
    for (var i = 0; i < data.length; i++) bytes[i] = data.charCodeAt(i) & 0xff;
    sendKeys(bytes);
  });
  term.onResize(sendSize);
  window.addEventListener("resize", function () { fit.fit(); });
})();
