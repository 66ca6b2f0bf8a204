// tangpoem's page: plain JavaScript, no build step, no other site. It talks to POST /api/poems only.
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
  const SEED_MAX = 2147483647;
  const PUNCT = "，。？！";
  // The API's defaults (tangpoem.serve.PoemRequest): a link carries only the settings that differ.
  const DEFAULTS = {
    mode: "continue", text: "", prefix_words: "", form: "", line_length: 0, lines: 0, rhyme: null, tones: null,
    pattern: "", temperature: 0.8, top_k: 0, top_p: 0.9, repetition_penalty: 1, repeat_guard: true,
    candidates: 1, drafts: 1, num_poems: 1, max_gen_len: 200, seed: null,
  };
  const MODES = {
    continue: { label: "开头", name: "续写", hint: "诗的开头几个字或一句，模型接着写；也可以留空。",
      placeholder: "例：春眠不觉晓，" },
    acrostic: { label: "藏头", name: "藏头", hint: "每句的第一个字，依次藏进诗里。", placeholder: "例：春花秋月" },
    template: { label: "模板", name: "填空", hint: "用 □ 或 _ 标出要模型写的字，用 ，。分句。",
      placeholder: "例：床前明月光，□□□□□。□□□□□，□□□□□。" },
  };
  const TEMPLATES = {
    五绝: "□□□□□，□□□□□。\n□□□□□，□□□□□。",
    七绝: "□□□□□□□，□□□□□□□。\n□□□□□□□，□□□□□□□。",
    example: "床前明月光，□□□□□。\n□□□□□，□□□□□。",
  };
  const FIELD_NAMES = {  // for messages about settings the form does not show
    text: "文字", form: "体裁", rhyme: "押韵", tones: "平仄", temperature: "温度", num_poems: "首数",
    prefix_words: "起兴", seed: "种子", candidates: "候选",
  };

  const controls = $("#controls");
  const radio = (name) => $(`input[name="${name}"]:checked`, controls).value;
  const setRadio = (name, value) => {
    const input = $(`input[name="${name}"][value="${CSS.escape(value)}"]`, controls);
    if (input) input.checked = true;
  };
  const chars = (s) => [...s];  // code points: some characters of the corpus lie outside the BMP

  // ------------------------------------------------------------------ the form

  function showMode() {
    const mode = radio("mode");
    const m = MODES[mode];
    $("#text-label").textContent = m.label;
    $("#text-hint").textContent = m.hint;
    $("#text").placeholder = m.placeholder;
    $("#text").rows = mode === "template" ? 4 : 2;
    $(".template-tools").hidden = mode !== "template";
    const formSegments = $("#form-field .segments");
    formSegments.classList.toggle("disabled", mode === "template");
    $$("input", formSegments).forEach((i) => { i.disabled = mode === "template"; });
    $("#form-hint").hidden = mode !== "template";
  }

  function intOr(value, fallback) {
    const v = String(value).trim();
    return v === "" ? fallback : Number(v);  // not an integer: the server says so beside the field
  }

  function settingsFromForm() {
    const mode = radio("mode");
    const s = {
      mode,
      text: $("#text").value.trim(),
      form: mode === "template" ? "" : radio("form"),
      rhyme: $("#rhyme").checked,
      tones: $("#tones").checked,
      temperature: Number($("#temperature").value),
      num_poems: intOr($("#num_poems").value, 1),
      prefix_words: $("#prefix_words").value.trim(),
      candidates: intOr($("#candidates").value, 1),
    };
    const seed = $("#seed").value.trim();
    if (seed !== "") s.seed = Number(seed);
    return s;
  }

  function fillForm(s) {
    setRadio("mode", s.mode || "continue");
    $("#text").value = s.text || "";
    setRadio("form", s.form || "");
    if (typeof s.rhyme === "boolean") $("#rhyme").checked = s.rhyme;
    if (typeof s.tones === "boolean") $("#tones").checked = s.tones;
    if (typeof s.temperature === "number") $("#temperature").value = s.temperature;
    $("#temperature-out").value = Number($("#temperature").value).toFixed(2);
    $("#prefix_words").value = s.prefix_words || "";
    $("#candidates").value = s.candidates || 1;
    if (s.prefix_words || (s.candidates || 1) > 1) $(".more").open = true;
    showMode();
  }

  // ------------------------------------------------------------------ errors, in words, beside their input

  function clearErrors(root = document) {
    $$(".err", root).forEach((e) => { e.textContent = ""; });
    $$(".invalid", root).forEach((e) => e.classList.remove("invalid"));
  }

  function describe(err) {
    // err: {status, body} from the API, or {message} when the server could not be reached
    if (!err.status) return { general: `连不上服务器：它还在运行吗？（${err.message || "网络错误"}）` };
    const body = err.body || {};
    if (err.status === 503) return { general: "服务器正忙，请稍等片刻再写。" };
    if (err.status === 413) return { general: "请求太大了：文字请少于 200 字。" };
    if (err.status !== 422) return { general: `服务器出错（${err.status}）：${body.detail || "没有说明"}` };
    const out = {};
    const errors = body.errors && body.errors.length ? body.errors : [{ field: body.field, message: body.detail }];
    for (const e of errors) {
      let message = e.message;
      if (e.field === body.field && body.chars && body.chars.length) {
        message = `模型的字表里没有「${body.chars.join("」「")}」，换个字试试。（${message}）`;
      }
      const key = e.field && $(`.err[data-for="${e.field}"]`) ? e.field : "general";
      const label = key === "general" && e.field ? `${FIELD_NAMES[e.field] || e.field}：` : "";
      out[key] = out[key] ? `${out[key]}；${label}${message}` : label + message;
    }
    return out;
  }

  function showErrors(err, generalBox) {
    const described = describe(err);
    for (const [field, message] of Object.entries(described)) {
      if (field === "general") {
        generalBox.textContent = message;
        continue;
      }
      const box = $(`.err[data-for="${field}"]`);
      box.textContent = message;
      const details = box.closest("details");
      if (details) details.open = true;  // an error inside 更多 must not stay folded away
      const input = $(`#${field}`) || $(`input[name="${field}"]:checked`, controls)?.nextElementSibling;
      if (input) input.classList.add("invalid");
    }
  }

  // ------------------------------------------------------------------ the API

  async function writePoems(settings) {
    let res;
    try {
      res = await fetch("/api/poems", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify(settings),
      });
    } catch (e) {
      throw { message: e.message };
    }
    let body = null;
    try {
      body = await res.json();
    } catch (e) { /* not JSON: described by its status */ }
    if (res.ok && body) return body;
    throw { status: res.status, body };
  }

  // ------------------------------------------------------------------ poems

  function headsOf(settings) {
    if (settings.mode !== "acrostic") return 0;
    return chars(settings.text).filter((c) => !"，。？！；：、,.?!;: ".includes(c)).length;
  }

  function kindOf(poem, settings) {
    const lines = poem.lines.length;
    const len = lines ? chars(poem.lines[0]).length - 1 : 0;
    const forms = { "5,4": "五绝", "7,4": "七绝", "5,8": "五律", "7,8": "七律" };
    const shape = forms[`${len},${lines}`] || `${len} 言 ${lines} 句`;
    const mode = settings.mode === "acrostic" ? `藏头「${settings.text}」` : MODES[settings.mode].name;
    return `${shape} · ${mode}`;
  }

  function linkFor(settings, seed, heads) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(settings)) {
      if (key === "seed" || key === "num_poems" || value === null || value === undefined) continue;
      if (key in DEFAULTS && DEFAULTS[key] === value) continue;
      params.set(key, String(value));
    }
    params.set("seed", String(seed));
    if (heads) params.set("heads", String(heads));
    return `${location.pathname}?${params}`;
  }

  function settingsFromLink(params) {
    const s = {};
    for (const [key, raw] of params) {
      if (!(key in DEFAULTS)) continue;
      const kind = typeof DEFAULTS[key];
      if (raw === "true" || raw === "false") s[key] = raw === "true";
      else if (kind === "number" || key === "seed") s[key] = Number(raw);
      else s[key] = raw;
    }
    return s;
  }

  function renderPoem(card, poem, settings, heads, locked = new Set()) {
    card._poem = poem;
    card._settings = settings;
    card._heads = heads;
    $(".poem-kind", card).textContent = kindOf(poem, settings);
    $(".poem-seed", card).textContent = `种子 ${poem.seed}`;
    const list = $(".lines", card);
    list.replaceChildren();
    poem.lines.forEach((line, i) => {
      const li = document.createElement("li");
      li.className = "line";
      const text = document.createElement("span");
      text.className = "chars";
      chars(line).forEach((ch, j) => {
        const span = document.createElement("span");
        span.textContent = ch;
        if (PUNCT.includes(ch)) span.className = "punct";
        else if (j === 0 && i < heads) span.className = "head";
        text.append(span);
      });
      const lock = document.createElement("button");
      lock.type = "button";
      lock.className = "lock";
      lock.textContent = "锁";
      lock.title = "锁住这一句：重写时保留";
      lock.setAttribute("aria-label", `锁住第 ${i + 1} 句`);
      lock.setAttribute("aria-pressed", locked.has(i) ? "true" : "false");
      li.classList.toggle("locked", locked.has(i));
      li.append(text, lock);
      list.append(li);
    });
    const notes = [];
    if (poem.rhyme) notes.push(`韵：${poem.rhyme}`);
    if (poem.pattern) notes.push(`格律：${poem.pattern}`);
    if (poem.score !== null && poem.score !== undefined) notes.push(`模型评分 ${poem.score.toFixed(2)}`);
    $(".poem-notes", card).textContent = notes.join(" · ");
    const link = $(".link", card);
    link.href = linkFor(settings, poem.seed, heads);
    link.title = "打开这个链接会再写出这一首";
    const rewritable = templateOf(poem, new Set(), heads) !== null;
    const rewrite = $(".rewrite", card);
    rewrite.disabled = !rewritable;
    rewrite.title = rewritable ? "锁住的句子不变，其余的换一个种子重写" : "这首诗的句子长短不一或句数为单，不能按模板重写";
  }

  function newCard(poem, settings, heads) {
    const card = $("#poem-template").content.firstElementChild.cloneNode(true);
    renderPoem(card, poem, settings, heads);
    return card;
  }

  function lockedLines(card) {
    return new Set($$(".lock", card).map((b, i) => (b.getAttribute("aria-pressed") === "true" ? i : -1)).filter((i) => i >= 0));
  }

  function templateOf(poem, locked, heads) {
    // the poem with its locked lines kept, the rest blank (acrostic heads stay): what tangpoem calls a template
    const lines = poem.lines;
    if (!lines.length || lines.length % 2) return null;
    const length = chars(lines[0]).length;
    if (lines.some((l) => chars(l).length !== length || !PUNCT.includes(chars(l)[length - 1]))) return null;
    return lines.map((line, i) => {
      if (locked.has(i)) return line;
      const cs = chars(line);
      return cs.map((c, j) => (j === length - 1 || (j === 0 && i < heads) ? c : "□")).join("");
    }).join("");
  }

  async function rewrite(card) {
    const poem = card._poem;
    const locked = lockedLines(card);
    const template = templateOf(poem, locked, card._heads);
    const status = $(".status", card);
    clearErrors(card);
    if (template === null) return;
    const settings = {
      ...card._settings, mode: "template", text: template, num_poems: 1, seed: (poem.seed + 1) % (SEED_MAX + 1),
    };
    card.classList.add("busy");
    status.textContent = "正在重写…";
    try {
      const answer = await writePoems(settings);
      renderPoem(card, answer.poems[0], answer.settings, card._heads, locked);
      const n = poem.lines.length - locked.size;
      status.textContent = `重写了 ${n} 句`;
    } catch (err) {
      status.textContent = "";
      const d = describe(err);
      $(".poem-error", card).textContent = Object.values(d).join("；");
    } finally {
      card.classList.remove("busy");
    }
  }

  async function copyPoem(card) {
    const text = card._poem.couplets.join("\n");
    const status = $(".status", card);
    try {
      await navigator.clipboard.writeText(text);
    } catch (e) {  // no clipboard API (e.g. plain http from another machine): the old way
      const area = document.createElement("textarea");
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    status.textContent = "已复制";
    setTimeout(() => { if (status.textContent === "已复制") status.textContent = ""; }, 1500);
  }

  // ------------------------------------------------------------------ writing

  async function write(settings, linkHeads = 0) {
    // linkHeads: a link to a rewritten acrostic says how many lines begin with a head character
    const button = $("#write");
    clearErrors();
    button.disabled = true;
    button.textContent = "正在写…";
    try {
      const answer = await writePoems(settings);
      const heads = Math.max(headsOf(answer.settings), linkHeads);
      const cards = answer.poems.map((p) => newCard(p, answer.settings, heads));
      $("#poems").replaceChildren(...cards);
      $("#empty").hidden = cards.length > 0;
    } catch (err) {
      showErrors(err, $("#general-error"));
    } finally {
      button.disabled = false;
      button.textContent = "写诗";
    }
  }

  controls.addEventListener("submit", (e) => {
    e.preventDefault();
    write(settingsFromForm());
  });
  $$('input[name="mode"]', controls).forEach((i) => i.addEventListener("change", showMode));
  $("#temperature").addEventListener("input", (e) => {
    $("#temperature-out").value = Number(e.target.value).toFixed(2);
  });
  $$(".stepper button").forEach((b) => b.addEventListener("click", () => {
    const input = $("#num_poems");
    const v = Math.round(Number(input.value) || 1) + Number(b.dataset.step);
    input.value = Math.min(8, Math.max(1, v));
  }));
  $$(".template-tools button").forEach((b) => b.addEventListener("click", () => {
    $("#text").value = TEMPLATES[b.dataset.template].replace(/\n/g, "");
    $("#text").focus();
  }));
  $("#text").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) controls.requestSubmit();
  });
  $("#poems").addEventListener("click", (e) => {
    const card = e.target.closest(".poem");
    if (!card) return;
    if (e.target.classList.contains("lock")) {
      const pressed = e.target.getAttribute("aria-pressed") !== "true";
      e.target.setAttribute("aria-pressed", String(pressed));
      e.target.closest(".line").classList.toggle("locked", pressed);
    } else if (e.target.classList.contains("rewrite")) {
      rewrite(card);
    } else if (e.target.classList.contains("copy")) {
      copyPoem(card);
    }
  });

  async function showModel() {
    try {
      const res = await fetch("/api/health");
      const h = await res.json();
      const m = h.model || {};
      const name = m.name || "";
      const parts = [`模型 ${name}`];
      if (m.num_layers) parts.push(`${m.num_layers} 层 LSTM × ${m.hidden_dim}`);
      if (m.vocab_size) parts.push(`${m.vocab_size.toLocaleString()} 字`);
      if (m.steps) parts.push(`训练 ${m.steps.toLocaleString()} 步`);
      $("#model-info").textContent = parts.join(" · ") + (h.ready ? "" : " · 尚未就绪");
    } catch (e) {
      $("#model-info").textContent = "连不上服务器";
    }
  }

  // ------------------------------------------------------------------ start: a link writes its poem again

  showMode();
  showModel();
  const params = new URLSearchParams(location.search);
  if (params.has("seed") || params.has("text") || params.has("mode")) {
    const request = settingsFromLink(params);
    if (!("num_poems" in request)) request.num_poems = 1;
    fillForm({ ...DEFAULTS, ...request });
    write(request, Number(params.get("heads")) || 0);
  }
})();
