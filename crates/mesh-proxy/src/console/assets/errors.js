// The page's own error list (a classic script, loaded before the modules):
// every script error, rejected promise, console.error/console.warn, file
// that failed to load and load blocked by the content security policy is
// kept in window.devmeshErrors and shown at the foot of the page.
(function () {
  'use strict';
  var errors = [];
  window.devmeshErrors = errors;
  function show() {
    var foot = document.getElementById('errors');
    if (!foot || errors.length === 0) return;
    foot.hidden = false;
    foot.textContent = 'Errors on this page: ' + errors.join(' | ');
  }
  function add(text) {
    errors.push(String(text));
    show();
  }
  window.addEventListener('error', function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) {
      add('failed to load ' + (t.src || t.href));
      return;
    }
    add((e.message || 'error') + ' at ' + e.filename + ':' + e.lineno);
  }, true);
  window.addEventListener('unhandledrejection', function (e) {
    var r = e.reason;
    add('unhandled rejection: ' + (r && r.stack ? r.stack : r));
  });
  document.addEventListener('securitypolicyviolation', function (e) {
    add('blocked by the content security policy: ' + e.violatedDirective + ' ' + e.blockedURI);
  });
  ['error', 'warn'].forEach(function (level) {
    var original = console[level].bind(console);
    console[level] = function () {
      add(level + ': ' + Array.prototype.join.call(arguments, ' '));
      original.apply(null, arguments);
    };
  });
  document.addEventListener('DOMContentLoaded', show);
})();
