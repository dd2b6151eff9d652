// The web terminal (web/terminal.rs): xterm.js ⇄ the terminal WebSocket.
// BINARY frames carry keystrokes (up) and output (down); TEXT frames carry
// JSON: {"resize":{"cols":C,"rows":R}} up, {"exit":STATUS} down. The shell
// is kept in the session while the page is away, so a reconnect (after a
// blip, or reopening the page) finds it and gets its recent output again.
(function () {
  "use strict";
  var el = document.getElementById("term");
  var stateEl = document.getElementById("term-state");
  if (!el || typeof Terminal === "undefined") return;

  var term = new Terminal({
    cursorBlink: true,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    fontSize: 14,
    scrollback: 5000,
    theme: { background: "#0f172a", foreground: "#e2e8f0", cursor: "#38bdf8" },
  });
  var fit = new FitAddon.FitAddon();
  term.loadAddon(fit);
  term.open(el);
  fit.fit();
  term.focus();

  var enc = new TextEncoder();
  var dec = new TextDecoder();
  // Output listeners (window.airlockTerminal.onOutput): the echo benchmark.
  var listeners = [];
  var ws = null;
  var retry = 0;
  var exited = false;
  // Another tab (or `ssh -t S airlock-attach`) has the shell: wait for Enter.
  var away = false;
  var timer = null;

  function say(text, kind) {
    stateEl.textContent = text;
    stateEl.className = "term-state" + (kind ? " term-" + kind : "");
  }

  function url() {
    var proto = location.protocol === "https:" ? "wss:" : "ws:";
    return proto + "//" + location.host + el.dataset.ws +
      "&cols=" + term.cols + "&rows=" + term.rows;
  }

  function connect() {
    timer = null;
    exited = false;
    away = false;
    say("connecting…");
    var sock = new WebSocket(url());
    sock.binaryType = "arraybuffer";
    var fresh = true;
    sock.onopen = function () {
      ws = sock;
      retry = 0;
      say("connected", "ok");
    };
    sock.onmessage = function (ev) {
      if (typeof ev.data === "string") {
        var msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if ("exit" in msg) {
          exited = true;
          var st = msg.exit === null ? "a signal" : "status " + msg.exit;
          term.write("\r\n\x1b[2m[the shell exited with " + st +
            "; press Enter for a new one]\x1b[0m\r\n");
          say("shell exited", "warn");
        }
        return;
      }
      if (fresh) {
        // The session replays the shell's recent output on every attach.
        term.reset();
        fresh = false;
      }
      term.write(new Uint8Array(ev.data));
      if (listeners.length) {
        var text = dec.decode(ev.data);
        listeners.forEach(function (f) { f(text); });
      }
    };
    sock.onclose = function (ev) {
      if (ws === sock) ws = null;
      if (exited) return;
      if (ev.code === 4000) {
        away = true;
        term.write("\r\n\x1b[2m[press Enter to take it back here]\x1b[0m\r\n");
        say("opened elsewhere", "warn");
        return;
      }
      if (ev.code === 1008 || (ev.code === 1011 && retry >= 3) || retry >= 12) {
        say((ev.reason || "cannot reach the terminal") + " — reload the page to try again", "error");
        return;
      }
      var wait = Math.min(10000, 500 * Math.pow(2, retry++));
      say((ev.reason ? ev.reason + " — " : "connection lost — ") +
        "reconnecting in " + Math.round(wait / 1000) + " s", "warn");
      timer = setTimeout(connect, wait);
    };
  }

  function send(data) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(data));
  }

  term.onData(function (d) {
    if (exited || away) {
      if (d === "\r") connect();
      return;
    }
    send(d);
  });
  term.onResize(function (size) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify({ resize: { cols: size.cols, rows: size.rows } }));
    }
  });
  // Ctrl+Shift+C copies the selection, Ctrl+Shift+V pastes (Ctrl+C stays
  // an interrupt for the shell).
  term.attachCustomKeyEventHandler(function (e) {
    if (e.type !== "keydown" || !e.ctrlKey || !e.shiftKey) return true;
    if (e.code === "KeyC") {
      if (term.hasSelection() && navigator.clipboard) {
        navigator.clipboard.writeText(term.getSelection());
      }
      return false;
    }
    if (e.code === "KeyV") {
      if (navigator.clipboard && navigator.clipboard.readText) {
        navigator.clipboard.readText().then(function (t) { term.paste(t); });
      }
      return false;
    }
    return true;
  });
  var pending = null;
  window.addEventListener("resize", function () {
    if (pending) clearTimeout(pending);
    pending = setTimeout(function () { pending = null; fit.fit(); }, 50);
  });
  window.addEventListener("online", function () {
    if (!ws && timer) { clearTimeout(timer); connect(); }
  });

  // For tests and the curious: the screen's text.
  window.airlockTerminal = {
    text: function () {
      var b = term.buffer.active || term.buffer;
      var out = [];
      for (var i = 0; i < b.length; i++) {
        var line = b.getLine(i);
        if (line) out.push(line.translateToString(true));
      }
      return out.join("\n");
    },
    size: function () { return [term.rows, term.cols]; },
    connected: function () { return !!ws && ws.readyState === WebSocket.OPEN; },
    state: function () { return stateEl.textContent; },
    // Sends `data` as typed keys; calls `f(text)` with each output frame.
    send: function (data) { send(data); },
    // Drops the connection as a network blip would (the page reconnects).
    drop: function () { if (ws) ws.close(); },
    onOutput: function (f) { listeners.push(f); },
    // The palette colour of the last occurrence of `needle` (-1: not a
    // palette colour; null: not on the screen).
    fgOf: function (needle) {
      var b = term.buffer.active || term.buffer;
      for (var i = b.length - 1; i >= 0; i--) {
        var line = b.getLine(i);
        var x = line ? line.translateToString(true).indexOf(needle) : -1;
        if (x >= 0) {
          // This xterm.js (4.x) exposes no cell colours: read the internal
          // attribute word (palette modes 1 and 2, the colour in the low byte).
          var fg = line._line.getFg(x);
          var mode = fg & 0x3000000;
          return mode === 0x1000000 || mode === 0x2000000 ? fg & 0xff : -1;
        }
      }
      return null;
    },
  };

  connect();
})();
