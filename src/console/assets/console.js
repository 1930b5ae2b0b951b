// hookgate console: the live event list, copy buttons and confirmations. The pages work
// without this file; it adds what needs a script. No framework, nothing loaded from elsewhere.
"use strict";

(function () {
  // Copy buttons: data-copy holds the text. Says "Copied" for a moment, for eyes and ears.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-copy]");
    if (!button) return;
    var text = button.getAttribute("data-copy");
    var said = function (word) {
      var before = button.textContent;
      button.textContent = word;
      setTimeout(function () { button.textContent = before; }, 1500);
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () { said("Copied"); }, function () { said("Copy failed"); });
    } else {
      var area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.className = "visually-hidden";
      document.body.appendChild(area);
      area.select();
      var copied = false;
      try { copied = document.execCommand("copy"); } catch (e) { copied = false; }
      document.body.removeChild(area);
      button.focus();
      said(copied ? "Copied" : "Copy failed");
    }
  });

  // Forms that destroy something ask first.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) event.preventDefault();
  });

  // The live event list: the API's event stream after the events the page listed.
  var live = document.getElementById("live-events");
  if (!live || !window.EventSource) return;
  var rows = document.getElementById("event-rows");
  var status = document.getElementById("live-status");
  var MAX_ROWS = 200;

  function say(text, state) {
    status.textContent = text;
    status.className = "live-status " + state;
  }

  function cell(label, child) {
    var td = document.createElement("td");
    td.setAttribute("data-label", label);
    if (typeof child === "string") td.textContent = child; else td.appendChild(child);
    return td;
  }

  function element(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function timeOf(iso) {
    var time = element("time", "", "");
    time.setAttribute("datetime", iso);
    // As the server writes it: 2026-11-23 10:00:00 UTC.
    time.textContent = iso.replace("T", " ").replace(/\.\d+/, "").replace("Z", " UTC");
    return time;
  }

  function row(event) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-id", event.id);
    tr.className = "fresh";
    tr.appendChild(cell("Received", timeOf(event.receivedAt)));
    var name = element("td");
    name.setAttribute("data-label", "Event");
    var link = element("a", "", event.name);
    link.href = "/console/events/" + encodeURIComponent(event.id);
    name.appendChild(link);
    if (event.quarantined) {
      name.appendChild(document.createTextNode(" "));
      name.appendChild(element("span", "badge warn", "quarantined"));
    }
    tr.appendChild(name);
    tr.appendChild(cell("App", event.app));
    tr.appendChild(cell("Type", element("span", "badge plain", event.hookType)));
    tr.appendChild(cell("Id", element("code", "", event.id)));
    return tr;
  }

  var arrived = 0;
  var source = new EventSource(live.getAttribute("data-stream"));
  source.onopen = function () { say("Live: new events appear as they arrive", "live"); };
  source.onerror = function () {
    say(source.readyState === EventSource.CLOSED ? "Stopped: reload the page" : "Reconnecting…", "down");
  };
  source.addEventListener("event", function (message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    // The page's own list and the stream may overlap by an event or two.
    if (rows.querySelector('tr[data-id="' + CSS.escape(event.id) + '"]')) return;
    var empty = document.getElementById("no-events");
    if (empty) empty.remove();
    rows.insertBefore(row(event), rows.firstChild);
    while (rows.children.length > MAX_ROWS) rows.removeChild(rows.lastChild);
    arrived += 1;
    say("Live: " + arrived + (arrived === 1 ? " new event" : " new events") + " since the page opened", "live");
  });
})();
