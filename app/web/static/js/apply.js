// Apply for data: small enhancements; the form works the same without them.
// - After a refused submission, move focus to the error summary so it is read first.
// - Show the gratis explanation only when a criterion is chosen (it stays in the page and
//   in the tab order whenever one is).
(function () {
  "use strict";
  var summary = document.getElementById("error-summary");
  if (summary) {
    summary.focus();
  }
  var box = document.querySelector(".gratis-justification");
  var radios = document.querySelectorAll('input[name="gratis_criterion"]');
  if (!box || !radios.length) {
    return;
  }
  var text = box.querySelector("textarea");
  function update() {
    var chosen = document.querySelector('input[name="gratis_criterion"]:checked');
    var claimed = Boolean(chosen && chosen.value);
    box.hidden = !claimed && !(text && text.value);
    if (text) {
      text.required = claimed;
    }
  }
  radios.forEach(function (radio) {
    radio.addEventListener("change", update);
  });
  update();
})();
