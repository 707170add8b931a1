/* Guichet : la discussion de la mairie sur son site. Sans dépendance, sans innerHTML, compatible CSP stricte.
   <script src="https://…/chat/guichet-chat.js" defer data-title data-color data-position data-privacy-url data-open></script> */
(() => {
  'use strict';
  const me = document.currentScript;
  if (!me || document.querySelector('.gc-root')) return;
  const base = me.src.replace(/\/guichet-chat\.js([?#].*)?$/, ''), opt = me.dataset;
  const KEY = 'guichet-chat-token', ACK = 'guichet-chat-privacy';
  const OPEN = 'Ouvrir la discussion avec la mairie', CLOSE = 'Fermer la discussion';
  const FAIL = 'Le service de discussion ne répond pas pour le moment. Réessayez dans un instant.';
  const get = k => { try { return localStorage.getItem(k); } catch (e) { return null; } };
  const put = (k, v) => { try { localStorage.setItem(k, v); } catch (e) { /* stockage refusé */ } };

  /* Couleurs : texte blanc ou presque noir sur la couleur principale (≥ 4,5:1), liens assombris si besoin. */
  const accent = /^#([\da-f]{3}){1,2}$/i.test(opt.color || '') ? opt.color : '#0b4f8a';
  const hex = accent.length === 4 ? accent.replace(/\w/g, '$&$&') : accent;
  const lum = c => c.reduce((s, v, i) => {
    v /= 255;
    return s + [0.2126, 0.7152, 0.0722][i] * (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
  }, 0);
  const ratio = (a, b) => (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  let ink = [1, 3, 5].map(i => parseInt(hex.substr(i, 2), 16));
  const L = lum(ink), onAccent = ratio(L, 1) >= 4.5 ? '#fff' : ratio(L, lum([17, 17, 17])) >= 4.5 ? '#111' : '#000';
  while (ratio(lum(ink), lum([238, 241, 244])) < 4.5) ink = ink.map(v => v * 0.85 | 0);

  /* Le DOM, construit nœud par nœud : les textes sont toujours des nœuds texte. */
  const h = (sel, attrs, ...kids) => {
    const [tag, ...cls] = sel.split('.'), n = document.createElement(tag);
    if (cls.length) n.className = cls.join(' ');
    for (const k in attrs) n.setAttribute(k, attrs[k]);
    n.append(...kids);
    return n;
  };
  const btn = (cls, text) => h('button.gc-btn' + cls, { type: 'button' }, text);
  const sr = text => h('span.gc-sr', null, text);
  const icon = (d, cls) => {
    const NS = 'http://www.w3.org/2000/svg', s = document.createElementNS(NS, 'svg'), p = document.createElementNS(NS, 'path');
    s.setAttribute('viewBox', '0 0 24 24');
    s.setAttribute('aria-hidden', 'true');
    s.setAttribute('class', cls);
    p.setAttribute('d', d);
    s.append(p);
    return s;
  };
  const on = (n, ev, f) => n.addEventListener(ev, f);

  const badge = h('span.gc-badge', { 'aria-hidden': 'true', hidden: '' }, 'Nouveau');
  const launcher = h('button.gc-launcher', { type: 'button', 'aria-expanded': 'false', 'aria-controls': 'gc-panel', 'aria-label': OPEN },
    icon('M4 3h16a2 2 0 0 1 2 2v11a2 2 0 0 1-2 2h-9l-5 4v-4H4a2 2 0 0 1-2-2V5a2 2 0 0 1 2-2z', 'gc-icon'), badge);
  const title = h('h2.gc-title', { id: 'gc-title' }, opt.title || 'Mairie');
  const closer = h('button.gc-close', { type: 'button', 'aria-label': CLOSE }, icon('M6 6l12 12M18 6L6 18', 'gc-icon gc-x'));
  const banner = h('p.gc-handoff', { role: 'status' });
  const log = h('div.gc-log', { role: 'log', 'aria-live': 'off', 'aria-relevant': 'additions', 'aria-label': 'Messages', tabindex: 0 });
  const typing = h('p.gc-typing', { role: 'status' });
  const alertBox = h('div.gc-alert', { role: 'alert' });
  const privText = h('p');
  const privLink = h('a.gc-link', { target: '_blank', rel: 'noopener', hidden: '' }, 'En savoir plus', sr(' sur vos données (nouvelle fenêtre)'));
  const ackBtn = btn('.gc-primary', 'J’ai compris');
  const privacy = h('div.gc-privacy', { hidden: '' }, privText, privLink, ackBtn);
  const input = h('textarea.gc-input', { id: 'gc-input', rows: 2, maxlength: 4000, 'aria-describedby': 'gc-hint', placeholder: 'Écrivez votre message…' });
  const photoName = h('p.gc-photo-name', { id: 'gc-photo-name' }), photoSend = btn('.gc-primary', 'Envoyer la photo'), photoCancel = btn('', 'Annuler');
  const pending = h('div.gc-pending', { role: 'group', 'aria-labelledby': 'gc-photo-name', hidden: '' }, photoName, photoSend, photoCancel);
  const file = h('input.gc-file', { type: 'file', id: 'gc-file', accept: 'image/jpeg,image/png,image/webp' });
  const form = h('form.gc-composer', { hidden: '' }, h('label.gc-sr', { for: 'gc-input' }, 'Votre message'), input,
    h('p.gc-sr', { id: 'gc-hint' }, 'Entrée pour envoyer, Maj + Entrée pour aller à la ligne.'), pending,
    h('div.gc-row', null, file, h('label.gc-btn.gc-photo', { for: 'gc-file' }, 'Joindre une photo'),
      h('button.gc-btn.gc-primary', { type: 'submit' }, 'Envoyer')));
  const panel = h('div.gc-panel', { id: 'gc-panel', role: 'dialog', 'aria-labelledby': 'gc-title', hidden: '' },
    h('div.gc-head', null, title, closer), banner, log, typing, alertBox, privacy, form);
  const root = h('div.gc-root.gc-' + (opt.position === 'left' ? 'left' : 'right'),
    { role: 'region', 'aria-label': 'Discussion avec la mairie', hidden: '' }, panel, launcher);
  root.style.setProperty('--gc-accent', accent);
  root.style.setProperty('--gc-on-accent', onAccent);
  root.style.setProperty('--gc-ink', `rgb(${ink})`);

  /* L'API : {base}/api/… avec le jeton en en-tête ; toute erreur porte un texte en français. */
  let token = get(KEY), cursor = 0, ready = null, loaded = false, polling = 0, chain = Promise.resolve(), quick = null, photo = null;
  const seen = new Set();

  async function api(path, o = {}) {
    const headers = path === 'session' ? {} : { Authorization: 'Bearer ' + token };
    if (o.json) headers['Content-Type'] = 'application/json';
    let res, data;
    try {
      res = await fetch(base + '/api/' + path, { method: o.json || o.body ? 'POST' : 'GET', headers, credentials: 'omit',
        cache: 'no-store', body: o.json ? JSON.stringify(o.json) : o.body, signal: o.signal });
      data = await res.json().catch(() => null) || {};
    } catch (e) {
      throw Object.assign(new Error('La connexion avec la mairie est interrompue.'), { network: true });
    }
    if (!res.ok) throw Object.assign(new Error(data.error || FAIL), { status: res.status, expired: res.status === 401 });
    return data;
  }

  async function start(previous, notice) {
    const s = await api('session', { json: { token: previous || null } }), p = s.privacy || {}, raw = opt.privacyUrl || p.url;
    token = s.token;
    put(KEY, token);
    if (!opt.title && s.title) title.textContent = s.title;
    privText.textContent = p.text || 'Vos messages sont lus par la mairie pour traiter votre demande.';
    let url = null;
    try { url = raw && new URL(raw, location.href); } catch (e) { /* adresse illisible */ }
    privLink.hidden = !(url && /^https?:$/.test(url.protocol));
    if (!privLink.hidden) privLink.href = url.href;
    const hist = await api('history'), list = hist.messages || [];
    log.setAttribute('aria-live', 'off'); // l'historique n'est pas lu à voix haute, seulement les nouveaux messages
    log.textContent = '';
    seen.clear();
    list.forEach(m => add(m));
    if (!list.length && s.welcome) add({ author: 'bot', text: s.welcome });
    showQuick(hist.buttons);
    handoff(hist.handoff || {});
    cursor = hist.cursor || 0;
    const acked = !!get(ACK);
    privacy.hidden = acked;
    form.hidden = !acked;
    loaded = true;
    bottom();
    poll(++polling);
    setTimeout(() => { log.setAttribute('aria-live', 'polite'); if (notice) showAlert(notice); }, 400);
  }

  const ensure = () => ready || (ready = start(token).catch(e => { ready = null; throw e; }));

  function expired(e, text) { // 401 : une nouvelle conversation (ou celle qu'un autre onglet vient d'ouvrir)
    polling++;
    const other = get(KEY);
    ready = start(other !== token && other, e.message + (text ? ' Votre message est resté dans le champ de saisie : envoyez-le à nouveau.' : ''))
      .then(() => { if (text && !input.value) input.value = text; }, err => { ready = null; showAlert(err.message); });
    return ready;
  }

  /* Les messages de l'équipe : une longue requête après l'autre (le serveur la garde jusqu'à 25 s). */
  async function poll(gen) {
    for (let delay = 2; gen === polling;) {
      const t0 = Date.now(), ctl = new AbortController(), timer = setTimeout(() => ctl.abort(), 40000);
      try {
        const d = await api('updates?after=' + cursor, { signal: ctl.signal });
        if (gen !== polling) return; // une attente abandonnée (nouvelle conversation)
        apply(d);
        delay = 2;
        if (Date.now() - t0 < 1000) await sleep(1000);
      } catch (e) {
        if (gen !== polling) return;
        if (e.expired) return expired(e);
        await sleep(delay * 1000);
        delay = Math.min(30, delay * 2);
      } finally {
        clearTimeout(timer);
      }
    }
  }
  const sleep = ms => new Promise(r => setTimeout(r, ms));

  /* --- Affichage --------------------------------------------------------------------------------- */
  function fill(node, text) { // les adresses http(s) deviennent des liens, tout le reste du texte
    const re = /https?:\/\/[^\s<>"]+/g;
    let i = 0, m;
    while ((m = re.exec(text))) {
      const url = m[0].replace(/[.,;:!?)\]»'’]+$/, '');
      node.append(text.slice(i, m.index), h('a.gc-link', { href: url, target: '_blank', rel: 'noopener' }, url, sr(' (nouvelle fenêtre)')));
      re.lastIndex = i = m.index + url.length;
    }
    node.append(text.slice(i));
  }

  function add(m, live) {
    if (m.id != null && seen.has(m.id)) return null;
    seen.add(m.id);
    removeQuick();
    const who = ['citizen', 'staff'].includes(m.author) ? m.author : 'bot', bubble = h('p.gc-bubble');
    const pic = /^\[photo\] \S+ ?([\s\S]*)$/.exec(m.text || '');
    const item = h('div.gc-msg.gc-msg-' + who, null, bubble);
    if (who === 'staff') item.prepend(h('span.gc-author', null, m.name ? m.name + ' (mairie)' : 'L’équipe de la mairie', sr(' :')));
    else bubble.append(sr(who === 'citizen' ? 'Vous : ' : 'Assistant : '));
    fill(bubble, pic ? '📷 Photo envoyée' + (pic[1] ? '\n' + pic[1] : '') : String(m.text || ''));
    log.append(item);
    if (live && who !== 'citizen' && panel.hidden) notify(true);
    bottom();
    return item;
  }

  function apply(d) {
    const list = d.messages || [];
    list.forEach(m => add(m, true));
    if (list.length) showQuick(list[list.length - 1].buttons);
    if (d.handoff) handoff(d.handoff);
    cursor = Math.max(cursor, d.cursor || 0);
  }

  function showQuick(buttons) {
    removeQuick();
    if (!buttons || !buttons.length) return;
    quick = h('div.gc-quick', { role: 'group', 'aria-label': 'Réponses proposées' });
    buttons.forEach(b => {
      const choice = btn('.gc-choice', b.title);
      on(choice, 'click', () => { input.focus(); send({ payload: b.payload, text: b.title }); });
      quick.append(choice);
    });
    log.append(quick);
    bottom();
  }
  const removeQuick = () => quick && quick.remove();

  function handoff(d) {
    const text = !d.active ? '' : d.label || (d.taken ? 'Une personne de l’équipe a pris le relais.'
      : 'Votre demande est transmise : une personne de l’équipe vous répond ici.');
    if (banner.textContent !== text) { banner.textContent = text; bottom(); } // annoncé une fois par changement
  }

  const bottom = () => { log.scrollTop = log.scrollHeight; };

  function showAlert(text, retry) {
    alertBox.textContent = '';
    alertBox.append(h('p', null, text));
    if (retry) {
      const again = btn('', 'Réessayer');
      on(again, 'click', () => { alertBox.textContent = ''; input.focus(); retry(); });
      alertBox.append(again);
    }
    bottom();
  }

  /* --- Envoi : un message à la fois, dans l'ordre ; le même client_id quand on réessaie. ------------ */
  function send(body) {
    body.client_id = uid();
    deliver('messages', { json: body }, add({ author: 'citizen', text: body.text }), body.text);
  }
  const uid = () => (crypto.randomUUID ? crypto.randomUUID() : Date.now().toString(36) + Math.random().toString(36).slice(2));

  function deliver(path, o, item, text) {
    chain = chain.then(() => {
      alertBox.textContent = '';
      typing.textContent = banner.textContent ? 'Envoi en cours…' : 'L’assistant écrit…';
      bottom();
      return ensure().then(() => api(path, o)).then(apply, e => {
        if (e.expired) return expired(e, text);
        const mark = h('span.gc-mark', null, 'Non envoyé');
        item.append(mark);
        showAlert(e.network ? 'Votre message n’est pas parti : la connexion avec la mairie est interrompue.' : e.message,
          (e.network || e.status >= 500 || e.status === 429) && (() => { mark.remove(); deliver(path, o, item, text); }));
      }).finally(() => { typing.textContent = ''; });
    });
  }

  function submit() {
    const text = input.value.trim();
    if (!photo && !text) return input.focus();
    input.value = '';
    grow();
    if (!photo) return send({ text });
    const fd = new FormData(), f = photo;
    fd.append('photo', f, f.name);
    if (text) fd.append('caption', text);
    fd.append('client_id', uid());
    clearPhoto();
    input.focus();
    deliver('photo', { body: fd }, add({ author: 'citizen', text: '📷 Photo : ' + f.name + (text ? '\n' + text : '') }), text);
  }

  function clearPhoto() {
    photo = null;
    file.value = '';
    pending.hidden = true;
  }

  function grow() {
    input.style.height = 'auto';
    input.style.height = input.scrollHeight + 4 + 'px';
  }

  /* --- Ouvrir, fermer ---------------------------------------------------------------------------- */
  function notify(news) {
    badge.hidden = !news;
    launcher.setAttribute('aria-label', !panel.hidden ? CLOSE : news ? 'Ouvrir la discussion — nouveau message' : OPEN);
  }

  const target = () => (form.hidden ? ackBtn : input);

  function open(focus) {
    panel.hidden = false;
    launcher.setAttribute('aria-expanded', 'true');
    notify(false);
    bottom();
    if (focus) (loaded ? target() : closer).focus();
    ensure().then(() => { if (focus && document.activeElement === closer) target().focus(); },
      e => showAlert(e.message, () => open(true)));
  }

  function close() {
    panel.hidden = true;
    launcher.setAttribute('aria-expanded', 'false');
    notify(false);
    launcher.focus();
  }

  on(launcher, 'click', () => (panel.hidden ? open(true) : close()));
  on(closer, 'click', close);
  on(root, 'keydown', e => { if (e.key === 'Escape' && !panel.hidden) { e.stopPropagation(); close(); } });
  on(ackBtn, 'click', () => { put(ACK, '1'); privacy.hidden = true; form.hidden = false; input.focus(); });
  on(input, 'input', grow);
  on(input, 'keydown', e => { if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); submit(); } });
  on(form, 'submit', e => { e.preventDefault(); submit(); });
  on(photoSend, 'click', submit);
  on(photoCancel, 'click', () => { clearPhoto(); input.focus(); });
  on(file, 'change', () => {
    const f = file.files[0];
    if (!f) return;
    clearPhoto();
    if (!/^image\/(jpeg|png|webp)$/.test(f.type)) return showAlert('Ce fichier n’est pas accepté : choisissez une photo JPEG, PNG ou WebP.');
    if (f.size > 5 * 1024 * 1024) return showAlert('Cette photo est trop lourde (5 Mo au maximum) : réduisez-la ou choisissez-en une autre.');
    photo = f;
    alertBox.textContent = '';
    const size = f.size < 1048576 ? Math.ceil(f.size / 1024) + ' Ko' : (f.size / 1048576).toFixed(1).replace('.', ',') + ' Mo';
    photoName.textContent = `Photo choisie : ${f.name} (${size}). Votre texte servira de légende.`;
    pending.hidden = false;
    photoSend.focus();
  });

  /* --- Installation : la feuille de style d'abord, le widget n'apparaît qu'une fois stylé. -------- */
  function mount() {
    const href = base + '/guichet-chat.css';
    if ([...document.querySelectorAll('link[rel="stylesheet"]')].some(l => l.href === href)) root.hidden = false;
    else {
      const link = h('link', { rel: 'stylesheet', href });
      on(link, 'load', () => { root.hidden = false; });
      document.head.append(link);
    }
    document.body.append(root);
    if (token) ensure().catch(() => { /* réessayé à l'ouverture */ });
    if (opt.open === 'true') open(false);
  }
  if (document.body) mount(); else on(document, 'DOMContentLoaded', mount);
})();
