// The queue keeps itself up to date without reloading the page (a reload would erase what the
// CM is typing and move the focus): every few seconds it asks for the cards alone and swaps them
// in. If the focus is inside the list (a card's link or "Prendre" button), nothing moves under
// it: a notice offers to show the new list instead. Without JavaScript, the "actualiser" link.
(function () {
  "use strict";
  var link = document.getElementById("actualiser");
  var notice = document.getElementById("nouveaux");
  if (!link || !notice || !window.fetch) { return; }
  var every = Math.max(5, parseInt(link.getAttribute("data-refresh"), 10) || 30) * 1000;
  var url = link.getAttribute("data-url");
  var pending = null;

  function cards() { return document.getElementById("cartes"); }

  function say(text, withButton) {
    notice.textContent = text;
    if (withButton) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "secondary";
      button.textContent = "Afficher";
      button.addEventListener("click", function () { if (pending) { swap(pending); } cards().focus(); });
      notice.appendChild(document.createTextNode(" "));
      notice.appendChild(button);
    }
  }

  function swap(fresh) {
    var current = cards();
    var before = parseInt(current.getAttribute("data-count"), 10) || 0;
    var after = parseInt(fresh.getAttribute("data-count"), 10) || 0;
    fresh.setAttribute("tabindex", "-1");
    current.replaceWith(fresh);
    pending = null;
    var count = document.getElementById("compte");
    if (count) { count.textContent = String(after); }
    var added = after - before;
    say(added > 0 ? (added === 1 ? "1 nouveau ticket dans la liste." : added + " nouveaux tickets dans la liste.")
                  : "Liste mise à jour.", false);
  }

  function check() {
    fetch(url, {credentials: "same-origin", headers: {"Accept": "text/html"}, redirect: "manual"})
      .then(function (response) {
        if (response.type === "opaqueredirect" || response.status === 401 || response.status === 403) {
          say("Votre session a expiré : reconnectez-vous pour voir les nouveaux tickets.", false);
          return null;
        }
        return response.ok ? response.text() : null;
      })
      .then(function (html) {
        if (html === null || html === undefined) { return; }
        var holder = document.createElement("div");
        holder.innerHTML = html;
        var fresh = holder.querySelector("#cartes");
        var current = cards();
        if (!fresh || !current || fresh.getAttribute("data-signature") === current.getAttribute("data-signature")) {
          return;
        }
        if (current.contains(document.activeElement)) {
          pending = fresh;
          var added = (parseInt(fresh.getAttribute("data-count"), 10) || 0) -
                      (parseInt(current.getAttribute("data-count"), 10) || 0);
          say(added > 0 ? added + (added === 1 ? " nouveau ticket" : " nouveaux tickets") + " —"
                        : "La liste a changé —", true);
        } else {
          swap(fresh);
        }
      })
      .catch(function () { /* the server may be restarting: next time */ })
      .then(function () { window.setTimeout(check, every); });
  }
  window.setTimeout(check, every);
}());
