// tangpoem's page: plain JavaScript, no build step, no other site. At load it asks GET /api/settings once for
// every setting's default, limits and choices (none of them is copied here: the page follows the server), then
// writes with POST /api/poems in the API's names (start_words, acrostic, template, title, style, ...).
"use strict";

(() => {
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
  const PUNCT = "，。？！";
  const chars = (s) => [...s];  // code points: some characters of the corpus lie outside the BMP

  // ------------------------------------------------------------------ presentation (words, not values)

  // The settings shown up front, by hand-made controls; every other one goes to 更多设置, built from the API.
  const WORDS = ["start_words", "acrostic", "template"];  // the 方式 choice and the text box
  const UP_FRONT = new Set([...WORDS, "title", "form", "rhyme", "tones", "temperature", "num_poems"]);
  // How each setting is called on the page, in 更多设置's order; a setting the API adds later that is not
  // named here still appears there, under its API name and description.
  const LABELS = {
    start_words: { label: "开头" },
    acrostic: { label: "藏头" },
    template: { label: "模板" },
    title: { label: "标题" },
    title_guidance: { label: "扣题", hint: "诗多贴着标题写；1：不加引导" },
    plan: { label: "构思", hint: "有标题、没给关键词时：每句从这个标题常引出的意象里取一个字" },
    keywords: { label: "关键词", hint: "依次写进诗里的词，每句一个，用空格分开", placeholder: "例：明月 故乡" },
    keyword_pull: { label: "扣词", hint: "诗句向关键词靠拢的力度；0：只在句末补上" },
    form: { label: "体裁", choices: { "": "自由" } },
    rhyme: { label: "押韵" },
    tones: { label: "平仄" },
    temperature: { label: "温度" },
    num_poems: { label: "首数" },
    style: { label: "风格", hint: "像唐人还是宋人那样写（模型要两朝的诗都读过）", choices: { tang: "唐", song: "宋" } },
    prefix_words: { label: "起兴", hint: "先读给模型、不写进诗里的句子", placeholder: "例：欲穷千里目，更上一层楼" },
    seed: { label: "种子", hint: "留空则随机；同一种子写同一首", placeholder: "随机" },
    candidates: { label: "候选", hint: "每首写几遍，留模型最满意的一遍" },
    drafts: { label: "草稿", hint: "每联写几遍，留最满意的一遍" },
    max_gen_len: { label: "最长", hint: "最多写几个字（含标点）" },
    line_length: { label: "每句字数", hint: "0：由体裁或模型定" },
    lines: { label: "句数", hint: "0：由体裁或模型定" },
    pattern: { label: "格律", hint: "平仄打开时用哪一式", choices: { "": "任意" } },
    top_k: { label: "Top-k", hint: "只在最可能的 k 个字里选；0：不限" },
    top_p: { label: "Top-p", hint: "只在概率合计到 p 的字里选" },
    repetition_penalty: { label: "重复惩罚", hint: "诗里已有的字少用些；0：不罚" },
    repeat_guard: { label: "不叠三字", hint: "同一个字不连写三遍" },
    rhyme_lookahead: { label: "押韵前瞻", hint: "韵脚前一字先看看后面押得上哪个韵；0：不看" },
  };
  const NULL_CHOICE = "自动";  // a nullable setting left to the server (rhyme: on for the four forms)
  const BOOLEAN_CHOICES = { true: "开", false: "关" };
  const SLIDER_END = { temperature: 1.5 };  // where the slider stops; the box beside it takes the API's whole range
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
  const LEGACY_LINK = ["mode", "text"];  // links made before tangpoem 0.2; read, translated, never written

  const controls = $("#controls");
  let SETTINGS = {};  // name -> {type, default, minimum, maximum, maxLength, enum, nullable, description}
  const bound = {};  // name -> {get(), set(value), input: what an error about it marks}
  const radio = (name) => $(`input[name="${name}"]:checked`, controls)?.value;
  const defaults = () => Object.fromEntries(Object.entries(SETTINGS).map(([k, v]) => [k, v.default]));
  const labelOf = (name) => LABELS[name]?.label || name;
  const same = (a, b) => a === b || (a == null && b == null);

  // ------------------------------------------------------------------ controls, each bound to its setting

  function numberFrom(raw, name) {
    const v = String(raw).trim();
    return v === "" ? SETTINGS[name].default : Number(v);  // not a number: the server says so beside the field
  }

  function limitNumber(input, info) {
    input.min = info.minimum ?? "";
    input.max = info.maximum ?? "";
    input.step = info.type === "integer" ? "1" : "any";
  }

  function bindText(input, name) {
    const info = SETTINGS[name];
    if (info.maxLength != null) input.maxLength = info.maxLength;
    bound[name] = { input, get: () => input.value.trim(), set: (v) => { input.value = v ?? ""; } };
  }

  function bindNumber(input, name) {
    limitNumber(input, SETTINGS[name]);
    bound[name] = { input, get: () => numberFrom(input.value, name), set: (v) => { input.value = v ?? ""; } };
  }

  function bindSlider(slider, box, name) {
    const info = SETTINGS[name];
    limitNumber(box, info);
    slider.min = info.minimum ?? 0;
    const end = Math.min(info.maximum ?? Infinity, SLIDER_END[name] ?? Infinity, Math.max(info.default, 1) * 2);
    slider.max = Math.max(end, info.default);
    slider.step = info.type === "integer" ? "1" : "any";  // any: a fixed step could miss the default
    slider.addEventListener("input", () => { box.value = Number(slider.value).toFixed(2).replace(/\.?0+$/, ""); });
    box.addEventListener("input", () => { slider.value = box.value; });
    bound[name] = {
      input: box,
      get: () => numberFrom(box.value, name),
      set: (v) => { box.value = v ?? ""; slider.value = v ?? slider.min; },
    };
  }

  function choicesOf(name) {
    const info = SETTINGS[name];
    const words = LABELS[name]?.choices || {};
    const values = info.enum ? [...info.enum] : info.type === "boolean" ? [true, false] : [];
    if (info.nullable) values.unshift(null);
    return values.map((v) => ({
      value: JSON.stringify(v),
      label: v === null ? NULL_CHOICE : words[v] ?? (typeof v === "boolean" ? BOOLEAN_CHOICES[v] : v),
    }));
  }

  function bindSegments(box, name) {
    box.replaceChildren(...choicesOf(name).map((c) => {
      const label = document.createElement("label");
      const input = document.createElement("input");
      input.type = "radio";
      input.name = name;
      input.value = c.value;
      const span = document.createElement("span");
      span.textContent = c.label;
      label.append(input, span);
      return label;
    }));
    bound[name] = {
      input: box,
      get: () => JSON.parse(radio(name) ?? JSON.stringify(SETTINGS[name].default)),
      set: (v) => {
        const input = $(`input[name="${name}"][value="${CSS.escape(JSON.stringify(v ?? null))}"]`, box);
        if (input) input.checked = true;
      },
    };
  }

  function bindSelect(select, name) {
    select.replaceChildren(...choicesOf(name).map((c) => new Option(c.label, c.value)));
    bound[name] = {
      input: select,
      get: () => JSON.parse(select.value),
      set: (v) => { select.value = JSON.stringify(v ?? null); },
    };
  }

  function bindSwitch(input, name) {
    bound[name] = { input, get: () => input.checked, set: (v) => { input.checked = Boolean(v); } };
  }

  function advancedField(name) {
    // one control for a setting of 更多设置, chosen by what the API says of it
    const info = SETTINGS[name];
    const words = LABELS[name] || { label: name, hint: info.description };
    const field = document.createElement("div");
    field.className = "adv";
    field.dataset.setting = name;
    const label = document.createElement("label");
    label.textContent = words.label;
    label.title = info.description || "";
    const hint = document.createElement("p");
    hint.className = "hint";
    hint.textContent = words.hint || "";
    const err = document.createElement("p");
    err.className = "err";
    err.dataset.for = name;
    err.setAttribute("role", "alert");
    let control;
    const choices = info.enum || (info.type === "boolean" && info.nullable);
    if (info.type === "boolean" && !info.nullable) {
      field.classList.add("wide");
      label.className = "switch";
      const input = document.createElement("input");
      input.type = "checkbox";
      input.id = name;
      const track = document.createElement("span");
      track.className = "track";
      label.prepend(input, track);
      bindSwitch(input, name);
      field.append(label, hint, err);
      return field;
    } else if (choices && choicesOf(name).every((c) => chars(c.label).length <= 2)) {
      field.classList.add("wide");
      control = document.createElement("div");
      control.className = "segments compact";
      control.id = `${name}-choices`;
      control.setAttribute("aria-label", words.label);
      control.setAttribute("role", "radiogroup");
      bindSegments(control, name);
    } else if (choices) {
      control = document.createElement("select");
      bindSelect(control, name);
    } else if (info.type === "integer" || info.type === "number") {
      control = document.createElement("input");
      control.type = "number";
      control.inputMode = info.type === "integer" ? "numeric" : "decimal";
      bindNumber(control, name);
    } else {
      field.classList.add("wide");
      control = document.createElement("input");
      control.type = "text";
      control.spellcheck = false;
      bindText(control, name);
    }
    if (control.tagName !== "DIV") {
      control.id = name;
      label.htmlFor = name;
    }
    if (words.placeholder) control.placeholder = words.placeholder;
    field.append(label, control, hint, err);
    return field;
  }

  function buildForm() {
    // the hand-made controls get their limits and choices; the rest of the settings become 更多设置
    bindText($("#title"), "title");
    bindSegments($("#form-choices"), "form");
    bindSegments($("#rhyme-choices"), "rhyme");
    bindSegments($("#tones-choices"), "tones");
    bindSlider($("#temperature"), $("#temperature-value"), "temperature");
    bindNumber($("#num_poems"), "num_poems");
    const order = Object.keys(LABELS);
    const rest = Object.keys(SETTINGS).filter((name) => !UP_FRONT.has(name));
    rest.sort((a, b) => (order.indexOf(a) + 1 || Infinity) - (order.indexOf(b) + 1 || Infinity));
    $("#advanced-fields").replaceChildren(...rest.map(advancedField));
    $$('input[name="form"]', controls).forEach((i) => i.addEventListener("change", showMode));
  }

  // ------------------------------------------------------------------ the form <-> the settings

  function showMode() {
    const mode = radio("mode") || "continue";
    const m = MODES[mode];
    const text = $("#text");
    $("#text-label").textContent = m.label;
    $("#text-hint").textContent = m.hint;
    text.placeholder = m.placeholder;
    text.rows = mode === "template" ? 4 : 2;
    const limit = SETTINGS[mode === "template" ? "template" : "start_words"]?.maxLength;
    if (limit != null) text.maxLength = limit;
    $(".template-tools").hidden = mode !== "template";
    const formSegments = $("#form-choices");
    formSegments.classList.toggle("disabled", mode === "template");
    $$("input", formSegments).forEach((i) => { i.disabled = mode === "template"; });
    $("#form-hint").hidden = mode !== "template";
  }

  function settingsFromForm() {
    // every setting the form holds, then only those that differ from the API's defaults
    const s = {};
    for (const [name, b] of Object.entries(bound)) s[name] = b.get();
    const mode = radio("mode") || "continue";
    const text = $("#text").value.trim();
    Object.assign(s, {
      start_words: mode === "template" ? "" : text, acrostic: mode === "acrostic", template: mode === "template" ? text : "",
    });
    if (mode === "template") delete s.form;  // the template's shape is the form
    return Object.fromEntries(Object.entries(s).filter(([k, v]) => !(k in SETTINGS) || !same(v, SETTINGS[k].default)));
  }

  function fillForm(settings) {
    const s = { ...defaults(), ...settings };
    for (const [name, b] of Object.entries(bound)) b.set(s[name]);
    const mode = s.template ? "template" : s.acrostic ? "acrostic" : "continue";
    $(`input[name="mode"][value="${mode}"]`, controls).checked = true;
    $("#text").value = s.template || s.start_words || "";
    const folded = Object.keys(bound).filter((n) => !UP_FRONT.has(n) && !same(s[n], SETTINGS[n].default));
    if (folded.length) $("#advanced").open = true;  // a link's settings are never hidden
    showMode();
  }

  // ------------------------------------------------------------------ errors, in words, beside their input

  const boxFor = (field) => $$(".err[data-for]", controls).find((e) => e.dataset.for.split(" ").includes(field));

  function clearErrors(root = document) {
    $$(".err", root).forEach((e) => { e.textContent = ""; });
    $$(".invalid", root).forEach((e) => e.classList.remove("invalid"));
  }

  function describe(err) {
    // err: {status, body} from the API, or {message} when the server could not be reached
    if (!err.status) return { general: `连不上服务器：它还在运行吗？（${err.message || "网络错误"}）` };
    const body = err.body || {};
    if (err.status === 503) return { general: "服务器正忙，请稍等片刻再写。" };
    if (err.status === 413) return { general: "请求太大了：请少写些字。" };
    if (err.status !== 422) return { general: `服务器出错（${err.status}）：${body.detail || "没有说明"}` };
    const out = {};
    const errors = body.errors && body.errors.length ? body.errors : [{ field: body.field, message: body.detail }];
    for (const e of errors) {
      let message = e.message;
      if (e.field === body.field && body.chars && body.chars.length) {
        message = `模型的字表里没有「${body.chars.join("」「")}」，换个字试试。（${message}）`;
      }
      const key = e.field && boxFor(e.field) ? e.field : "general";
      const label = key === "general" && e.field ? `${labelOf(e.field)}：` : "";
      out[key] = out[key] ? `${out[key]}；${label}${message}` : label + message;
    }
    return out;
  }

  function showErrors(err, generalBox) {
    for (const [field, message] of Object.entries(describe(err))) {
      if (field === "general") {
        generalBox.textContent = message;
        continue;
      }
      const box = boxFor(field);
      box.textContent = message;
      const details = box.closest("details");
      if (details) details.open = true;  // an error inside 更多设置 must not stay folded away
      const words = { start_words: $("#text"), template: $("#text"), acrostic: $("#mode-choices") };
      const input = words[field] || bound[field]?.input;
      if (input) input.classList.add("invalid");
    }
  }

  // ------------------------------------------------------------------ the API

  async function getJSON(url, options) {
    let res;
    try {
      res = await fetch(url, options);
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

  const writePoems = (settings) => getJSON("/api/poems", {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(settings),
  });

  // ------------------------------------------------------------------ links: a poem's settings in the URL

  function linkFor(settings, seed, heads) {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(settings)) {
      if (key === "seed" || key === "num_poems" || value === null || value === undefined) continue;
      if (key in SETTINGS && same(SETTINGS[key].default, value)) continue;
      params.set(key, String(value));
    }
    params.set("seed", String(seed));
    if (heads) params.set("heads", String(heads));
    return `${location.pathname}?${params}`;
  }

  function valueFrom(info, raw) {
    if (raw === "null" && info.nullable) return null;
    if (info.type === "boolean") return raw === "true";
    if (info.type === "integer" || info.type === "number") return Number(raw);
    return raw;
  }

  function settingsFromLink(params) {
    const s = {};
    for (const [key, raw] of params) {
      if (key in SETTINGS) s[key] = valueFrom(SETTINGS[key], raw);
    }
    // mode + text: the earlier names, read for one release (tangpoem 0.2 drops them)
    const mode = params.get("mode") || "continue";
    if (params.has("text") && !s.start_words && !s.template) {
      if (mode === "template") s.template = params.get("text");
      else Object.assign(s, { start_words: params.get("text"), acrostic: mode === "acrostic" });
    } else if (mode === "acrostic" && !params.has("acrostic")) {
      s.acrostic = true;
    }
    return s;
  }

  // ------------------------------------------------------------------ poems

  function headsOf(settings) {
    if (!settings.acrostic || settings.template) return 0;
    return chars(settings.start_words).filter((c) => !"，。？！；：、,.?!;: ".includes(c)).length;
  }

  function kindOf(poem, settings) {
    const lines = poem.lines.length;
    const len = lines ? chars(poem.lines[0]).length - 1 : 0;
    const forms = { "5,4": "五绝", "7,4": "七绝", "5,8": "五律", "7,8": "七律" };
    const shape = forms[`${len},${lines}`] || `${len} 言 ${lines} 句`;
    const mode = settings.template ? MODES.template.name
      : settings.acrostic ? `藏头「${settings.start_words}」` : MODES.continue.name;
    const parts = [shape, mode];
    if (settings.style && SETTINGS.style && settings.style !== SETTINGS.style.default) {
      parts.push(LABELS.style.choices[settings.style] || settings.style);
    }
    return parts.join(" · ");
  }

  function renderPoem(card, poem, settings, heads, locked = new Set()) {
    card._poem = poem;
    card._settings = settings;
    card._heads = heads;
    $(".poem-kind", card).textContent = kindOf(poem, settings);
    $(".poem-seed", card).textContent = `种子 ${poem.seed}`;
    const title = $(".poem-title", card);
    title.textContent = poem.title || "";
    title.hidden = !poem.title;
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
      ...card._settings, start_words: "", acrostic: false, template, num_poems: 1,
      seed: (poem.seed + 1) % (SETTINGS.seed.maximum + 1),
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
      $(".poem-error", card).textContent = Object.values(describe(err)).join("；");
    } finally {
      card.classList.remove("busy");
    }
  }

  async function copyPoem(card) {
    const poem = card._poem;
    const text = [...(poem.title ? [poem.title] : []), ...poem.couplets].join("\n");
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
    if (controls.dataset.ready === "true") write(settingsFromForm());
  });
  $$('input[name="mode"]', controls).forEach((i) => i.addEventListener("change", showMode));
  $$(".stepper button").forEach((b) => b.addEventListener("click", () => {
    const input = $("#num_poems");
    const info = SETTINGS.num_poems;
    const v = Math.round(Number(input.value) || info.default) + Number(b.dataset.step);
    input.value = Math.min(info.maximum ?? Infinity, Math.max(info.minimum ?? -Infinity, v));
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
      const h = await getJSON("/api/health");
      const m = h.model || {};
      const parts = [`模型 ${m.name || ""}`];
      if (m.num_layers) parts.push(`${m.num_layers} 层 LSTM × ${m.hidden_dim}`);
      if (m.vocab_size) parts.push(`${m.vocab_size.toLocaleString()} 字`);
      if (m.steps) parts.push(`训练 ${m.steps.toLocaleString()} 步`);
      $("#model-info").textContent = parts.join(" · ") + (h.ready ? "" : " · 尚未就绪");
    } catch (e) {
      $("#model-info").textContent = "连不上服务器";
    }
  }

  // ------------------------------------------------------------------ start: the settings, then a link's poem

  async function start() {
    showModel();
    try {
      SETTINGS = (await getJSON("/api/settings")).settings;
    } catch (err) {
      const why = err.status ? `服务器答 ${err.status}` : err.message || "网络错误";
      $("#general-error").textContent = `读不到服务器的设置（${why}），请刷新页面重试。`;
      return;
    }
    buildForm();
    fillForm({});
    controls.dataset.ready = "true";
    $("#write").disabled = false;
    const params = new URLSearchParams(location.search);
    if ([...params.keys()].some((key) => key in SETTINGS || LEGACY_LINK.includes(key))) {
      const request = settingsFromLink(params);
      if (!("num_poems" in request)) request.num_poems = 1;  // a link is one poem: its seed
      fillForm(request);
      write(request, Number(params.get("heads")) || 0);
    }
  }

  showMode();
  start();
})();
