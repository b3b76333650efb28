/* HSI dashboard: progressive enhancement only; every page works without this script.
 *
 * - Key form: keeps the entered API key in localStorage (the server sets its own cookie for
 *   pages); "Forget key" removes it. EventSource cannot send headers, so the live feed gets
 *   the key as ?api_key=, the way /api/live accepts it.
 * - Live page: listens to /api/live; on a `batch` or `analysis` event it fetches the event's
 *   card (server-rendered HTML) and puts it in place, newest first. A card is 404 until the
 *   projector has written the event, so the fetch is retried for a while.
 */
(function () {
  "use strict";

  var STORE = "hsi.apiKey";

  function storedKey() {
    try { return window.localStorage.getItem(STORE); } catch (e) { return null; }
  }

  function storeKey(value) {
    try {
      if (value) { window.localStorage.setItem(STORE, value); } else { window.localStorage.removeItem(STORE); }
    } catch (e) { /* storage disabled: pages still work through the cookie */ }
  }

  var keyForm = document.getElementById("key-form");
  if (keyForm) {
    keyForm.addEventListener("submit", function () {
      storeKey(keyForm.elements.namedItem("api_key").value.trim());
    });
  }
  var forgetForm = document.getElementById("forget-key");
  if (forgetForm) {
    forgetForm.addEventListener("submit", function () { storeKey(null); });
  }

  var list = document.getElementById("live-events");
  var status = document.getElementById("live-status");
  if (!list || !status || !window.EventSource || !window.fetch) { return; }

  var keysOn = document.body.getAttribute("data-keys-enabled") === "true";
  var limit = parseInt(list.getAttribute("data-live-count"), 10) || 20;

  function say(text, link) {
    status.textContent = text;
    if (link) {
      var a = document.createElement("a");
      a.href = "/ui/key?next=" + encodeURIComponent(window.location.pathname);
      a.textContent = link;
      status.appendChild(document.createTextNode(" "));
      status.appendChild(a);
    }
  }

  var key = storedKey();
  if (keysOn && !key) {
    say("Live updates need the key in this browser.", "Enter it again");
    return;
  }

  function parseCard(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    var card = template.content.firstElementChild;
    return card && card.classList.contains("card") ? card : null;
  }

  function startOf(element) {
    return Date.parse(element.getAttribute("data-window-start")) || 0;
  }

  function place(card) {
    var existing = document.getElementById(card.id);
    if (existing) {
      if (existing.classList.contains("is-new")) { card.classList.add("is-new"); }
      if (existing.innerHTML !== card.innerHTML || existing.className !== card.className) {
        existing.replaceWith(card);
      }
      return false;
    }
    card.classList.add("is-new");
    var at = startOf(card);
    var before = null;
    for (var i = 0; i < list.children.length; i++) {
      if (startOf(list.children[i]) < at) { before = list.children[i]; break; }
    }
    list.insertBefore(card, before);
    while (list.children.length > limit) { list.removeChild(list.lastElementChild); }
    var empty = document.getElementById("no-events");
    if (empty) { empty.hidden = true; }
    return true;
  }

  function refresh(id, wantAnalysis, attempt) {
    function again() {
      // 100, 200 … then every 400 ms for about half a minute: a card shows up well
      // within a second of the projector writing its event.
      if (attempt < 80) {
        window.setTimeout(function () { refresh(id, wantAnalysis, attempt + 1); },
          Math.min(400, 100 * (attempt + 1)));
      }
    }
    window.fetch("/ui/fragments/events/" + encodeURIComponent(id), {
      credentials: "same-origin", cache: "no-store", headers: { Accept: "text/html" }
    }).then(function (response) {
      if (response.status === 401) {
        say("The server no longer accepts the key.", "Enter it again");
        return null;
      }
      if (!response.ok) { again(); return null; }
      return response.text();
    }).then(function (html) {
      if (html === null) { return; }
      var card = parseCard(html);
      if (!card) { return; }
      if (place(card)) {
        var camera = card.querySelector(".card-camera");
        var level = card.querySelector(".badge");
        say("New event" + (camera ? " at " + camera.textContent : "") +
            (level ? ": " + level.textContent : "") + ".");
      }
      if (wantAnalysis && card.getAttribute("data-analysis-status") === "pending") { again(); }
    }).catch(again);
  }

  var url = status.getAttribute("data-feed") + (keysOn ? "?api_key=" + encodeURIComponent(key) : "");
  var source = new EventSource(url);
  source.addEventListener("open", function () {
    say("Live: new events appear here as they happen.");
  });
  source.addEventListener("error", function () {
    if (source.readyState === EventSource.CLOSED) {
      say("Live updates stopped (the feed refused the connection). Reload the page to try again.",
        keysOn ? "Or enter the key again" : null);
    } else {
      say("Live: reconnecting…");
    }
  });
  function onEntry(wantAnalysis) {
    return function (message) {
      var data;
      try { data = JSON.parse(message.data); } catch (e) { return; }
      if (data && data.batch_id) { refresh(data.batch_id, wantAnalysis, 0); }
    };
  }
  source.addEventListener("batch", onEntry(false));
  source.addEventListener("analysis", onEntry(true));
}());
