window.addEventListener('load', () => {
  const out = {wrapped: [], overflow: [], width: window.innerWidth};
  // A number, a percentage or a mean ± sd (as simflib.report writes them).
  const number = /^[-+\u2212]?\d[\d.,]*(e[-+]?\d+)?%?(\s*\u00b1\s*\d[\d.,]*(e[-+]?\d+)?)?$/;
  document.querySelectorAll('div.cell_output table td, div.cell_output table th').forEach(cell => {
    const text = cell.innerText.trim();
    if (!number.test(text)) return;
    const range = document.createRange();
    range.selectNodeContents(cell);
    const tops = Array.from(range.getClientRects()).filter(r => r.width > 0).map(r => r.top).sort((a, b) => a - b);
    if (tops.length && tops[tops.length - 1] - tops[0] > 8) out.wrapped.push(text);
  });
  document.querySelectorAll('div.cell:not(.tag_hide-input):not(.tag_remove-input) div.cell_input pre').forEach(pre => {
    if (pre.clientWidth > 0 && pre.scrollWidth > pre.clientWidth + 1) out.overflow.push(pre.innerText.split('\n').sort((a, b) => b.length - a.length)[0]);
  });
  const el = document.createElement('pre');
  el.id = 'simflib-layout';
  el.textContent = JSON.stringify(out);
  document.body.appendChild(el);
});
