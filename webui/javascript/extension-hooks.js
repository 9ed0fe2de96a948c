// Page hooks for extensions' javascript/*.js, with A1111's names, so their scripts run
// unchanged: gradioApp(), onUiLoaded(fn), onUiUpdate(fn), onAfterUiUpdate(fn),
// onUiTabChange(fn), get_uiCurrentTab(). Loaded before every extension's files.
(function () {
  "use strict";
  const hooks = {loaded: [], update: [], afterUpdate: [], tabChange: []};
  let loaded = false;
  let currentTab = null;
  let afterTimer = null;

  window.gradioApp = function () {
    const app = document.querySelector("gradio-app");
    return app ? (app.shadowRoot || app) : document;
  };
  window.onUiLoaded = (fn) => hooks.loaded.push(fn);
  window.onUiUpdate = (fn) => hooks.update.push(fn);
  window.onAfterUiUpdate = (fn) => hooks.afterUpdate.push(fn);
  window.onUiTabChange = (fn) => hooks.tabChange.push(fn);
  window.get_uiCurrentTab = () => gradioApp().querySelector('[role="tab"][aria-selected="true"]');

  function run(list, arg) {
    for (const fn of list) {
      try { fn(arg); } catch (e) { console.error("extension UI hook failed:", e); }
    }
  }

  new MutationObserver((mutations) => {
    if (!loaded) {
      if (!gradioApp().querySelector("#txt2img_prompt")) return;  // the page is built
      loaded = true;
      run(hooks.loaded);
    }
    run(hooks.update, mutations);
    clearTimeout(afterTimer);  // once things settle (A1111: 200 ms)
    afterTimer = setTimeout(() => run(hooks.afterUpdate), 200);
    const tab = window.get_uiCurrentTab();
    const label = tab ? tab.textContent.trim() : null;
    if (label !== currentTab) {
      const first = currentTab === null;
      currentTab = label;
      if (!first) run(hooks.tabChange);
    }
  }).observe(document, {childList: true, subtree: true});
})();
