// airlock web UI: small progressive enhancements. Every page works without
// this script; with it, the SSH/SFTP dialog opens in place, the sessions
// table updates itself, destructive buttons ask first, uploads show
// progress (and take dropped files), and code blocks get copy buttons.
(function () {
  'use strict';

  var FRAGMENT = { 'X-Airlock-Fragment': '1' };

  // ------------------------------------------------------------ times
  function relative(date) {
    var s = Math.round((Date.now() - date.getTime()) / 1000);
    if (s < 45) return 'just now';
    var m = Math.round(s / 60);
    if (m < 60) return m + ' min ago';
    var h = Math.round(m / 60);
    if (h < 24) return h + ' h ago';
    var d = Math.round(h / 24);
    if (d < 7) return d + (d === 1 ? ' day ago' : ' days ago');
    return date.toLocaleDateString();
  }

  function initTimes(root) {
    root.querySelectorAll('time[datetime]').forEach(function (t) {
      var d = new Date(t.getAttribute('datetime'));
      if (isNaN(d.getTime())) return;
      t.title = d.toLocaleString();
      t.textContent = relative(d);
    });
  }

  // ------------------------------------------------------------ copy
  function copyText(text) {
    if (navigator.clipboard && window.isSecureContext) {
      return navigator.clipboard.writeText(text);
    }
    return new Promise(function (resolve, reject) {
      var ta = document.createElement('textarea');
      ta.value = text;
      ta.setAttribute('readonly', '');
      ta.style.position = 'fixed';
      ta.style.opacity = '0';
      document.body.appendChild(ta);
      ta.select();
      try { document.execCommand('copy') ? resolve() : reject(); } catch (e) { reject(e); }
      document.body.removeChild(ta);
    });
  }

  function initCopy(root) {
    root.querySelectorAll('[data-copy]').forEach(function (btn) {
      if (btn.dataset.ready) return;
      btn.dataset.ready = '1';
      btn.hidden = false;
      btn.addEventListener('click', function () {
        var pre = btn.parentNode.querySelector('pre');
        var label = btn.querySelector('span');
        copyText(pre.textContent).then(function () {
          btn.classList.add('done');
          label.textContent = 'Copied';
          setTimeout(function () { btn.classList.remove('done'); label.textContent = 'Copy'; }, 1600);
        }, function () {
          var range = document.createRange();
          range.selectNodeContents(pre);
          var sel = window.getSelection();
          sel.removeAllRanges();
          sel.addRange(range);
          label.textContent = 'Press Ctrl+C';
        });
      });
    });
  }

  // ------------------------------------------------------------ tabs
  function initTabs(root) {
    root.querySelectorAll('[data-tabs]').forEach(function (box, n) {
      if (box.dataset.ready) return;
      box.dataset.ready = '1';
      var panels = Array.prototype.slice.call(box.querySelectorAll(':scope > section.tab'));
      if (panels.length < 2) return;
      var list = document.createElement('div');
      list.className = 'tablist';
      list.setAttribute('role', 'tablist');
      var buttons = panels.map(function (panel, i) {
        var b = document.createElement('button');
        b.type = 'button';
        b.id = 'tabbtn-' + n + '-' + i;
        b.setAttribute('role', 'tab');
        b.setAttribute('aria-controls', panel.id);
        var h = panel.querySelector('h3');
        b.textContent = h.getAttribute('data-short') || h.textContent;
        panel.setAttribute('role', 'tabpanel');
        panel.setAttribute('aria-labelledby', b.id);
        list.appendChild(b);
        return b;
      });
      function select(i, focus) {
        buttons.forEach(function (b, j) {
          b.setAttribute('aria-selected', String(i === j));
          b.tabIndex = i === j ? 0 : -1;
          panels[j].hidden = i !== j;
        });
        if (focus) buttons[i].focus();
      }
      buttons.forEach(function (b, i) {
        b.addEventListener('click', function () { select(i, false); });
        b.addEventListener('keydown', function (e) {
          if (e.key === 'ArrowRight') select((i + 1) % buttons.length, true);
          if (e.key === 'ArrowLeft') select((i + buttons.length - 1) % buttons.length, true);
        });
      });
      box.insertBefore(list, box.firstChild);
      box.classList.add('js');
      var windows = /Windows/.test(navigator.userAgent) ? 1 : 0;
      select(windows, false);
    });
  }

  function init(root) {
    initTimes(root);
    initCopy(root);
    initTabs(root);
  }

  // ------------------------------------------------------------ dialog
  var modal = null;
  var opener = null;

  function openDialog(url) {
    fetch(url, { headers: FRAGMENT, credentials: 'same-origin' }).then(function (res) {
      if (!res.ok || res.redirected) { window.location.href = url; return null; }
      return res.text();
    }).then(function (html) {
      if (html === null) return;
      modal.innerHTML = html;
      init(modal);
      modal.showModal();
      var close = modal.querySelector('[data-close]');
      if (close) close.focus();
    }, function () { window.location.href = url; });
  }

  function initDialog() {
    modal = document.getElementById('modal');
    if (!modal || typeof modal.showModal !== 'function') return;
    document.addEventListener('click', function (e) {
      var a = e.target.closest('a[data-dialog]');
      if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      opener = a;
      openDialog(a.href);
    });
    modal.addEventListener('click', function (e) {
      if (e.target === modal || e.target.closest('[data-close]')) modal.close();
    });
    modal.addEventListener('close', function () {
      modal.innerHTML = '';
      if (opener && document.body.contains(opener)) opener.focus();
    });
  }

  // ------------------------------------------------------------ confirm, upload
  function initForms() {
    document.addEventListener('submit', function (e) {
      var form = e.target;
      if (form.matches('form[data-confirm]')) {
        if (!window.confirm(form.getAttribute('data-confirm'))) { e.preventDefault(); return; }
        if (!form.querySelector('input[name="confirmed"]')) {
          var c = document.createElement('input');
          c.type = 'hidden'; c.name = 'confirmed'; c.value = '1';
          form.appendChild(c);
        }
      }
      if (form.matches('form.upload-form') && window.FormData && window.XMLHttpRequest) {
        e.preventDefault();
        upload(form, null);
      }
    });
  }

  // Sends an upload form by XHR with a progress bar; `files` (dropped
  // files) replace the form's own file input when given.
  function upload(form, files) {
    var bar = form.querySelector('progress');
    var button = form.querySelector('button[type="submit"]');
    var data = new FormData(form);
    if (files) {
      data.delete('file');
      for (var i = 0; i < files.length; i++) data.append('file', files[i], files[i].name);
    }
    var xhr = new XMLHttpRequest();
    xhr.open('POST', form.action);
    xhr.setRequestHeader('X-Airlock-Fragment', '1');
    xhr.upload.addEventListener('progress', function (ev) {
      if (ev.lengthComputable && bar) bar.value = Math.round(ev.loaded * 100 / ev.total);
    });
    xhr.addEventListener('load', function () {
      var to = xhr.getResponseHeader('X-Location');
      if (xhr.status === 204 && to) {
        window.location.href = to;
      } else {
        document.open(); document.write(xhr.responseText); document.close();
      }
    });
    xhr.addEventListener('error', function () {
      button.disabled = false;
      button.textContent = 'Upload failed — try again';
    });
    if (bar) bar.hidden = false;
    button.disabled = true;
    button.textContent = files ? 'Uploading ' + files.length + (files.length === 1 ? ' file…' : ' files…') : 'Uploading…';
    xhr.send(data);
  }

  // ------------------------------------------------------------ drop
  // Files dropped anywhere on a page with `form.upload-form[data-drop]`
  // are uploaded by that form.
  function initDrop() {
    var form = document.querySelector('form.upload-form[data-drop]');
    var zone = document.getElementById('main');
    if (!form || !zone || !window.FormData || !window.XMLHttpRequest) return;
    var depth = 0;
    function hasFiles(e) {
      var t = e.dataTransfer && e.dataTransfer.types;
      return !!t && Array.prototype.indexOf.call(t, 'Files') >= 0;
    }
    function leave() { depth = 0; zone.classList.remove('dropping'); }
    zone.addEventListener('dragenter', function (e) {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth += 1;
      zone.classList.add('dropping');
    });
    zone.addEventListener('dragover', function (e) {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = 'copy';
    });
    zone.addEventListener('dragleave', function () {
      depth -= 1;
      if (depth <= 0) leave();
    });
    zone.addEventListener('drop', function (e) {
      if (!hasFiles(e)) return;
      e.preventDefault();
      leave();
      if (e.dataTransfer.files.length) upload(form, e.dataTransfer.files);
    });
  }

  // ------------------------------------------------------------ live sessions
  function initLive() {
    var body = document.querySelector('[data-live]');
    if (!body || !window.fetch) return;
    var state = document.getElementById('live-state');
    var version = body.getAttribute('data-version') || '';
    var failures = 0;
    var base = body.getAttribute('data-live');
    if (state) state.hidden = false;

    function again(ms) { setTimeout(poll, ms); }
    function poll() {
      var url = base + (base.indexOf('?') < 0 ? '?' : '&') + 'since=' + encodeURIComponent(version);
      fetch(url, { headers: FRAGMENT, credentials: 'same-origin', cache: 'no-store' }).then(function (res) {
        if (res.redirected) { window.location.reload(); return null; }
        if (res.status === 204) return '';
        if (!res.ok) throw new Error('HTTP ' + res.status);
        version = res.headers.get('X-Rows-Version') || '';
        return res.text();
      }).then(function (html) {
        if (html === null) return;
        failures = 0;
        if (state) { state.classList.remove('off'); state.textContent = 'Live'; }
        if (html) {
          body.innerHTML = html;
          body.setAttribute('data-version', version);
          init(body);
        }
        again(100);
      }).catch(function () {
        failures += 1;
        if (state) { state.classList.add('off'); state.textContent = 'Reconnecting…'; }
        again(Math.min(30000, 1000 * Math.pow(2, failures)));
      });
    }
    poll();
  }

  document.addEventListener('DOMContentLoaded', function () {
    init(document);
    initDialog();
    initForms();
    initDrop();
    initLive();
    setInterval(function () { initTimes(document); }, 60000);
  });
})();
