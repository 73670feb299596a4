window.addEventListener('load', () => {
  const out = {wrapped: [], overflow: [], wide: [], width: window.innerWidth};
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
  // Result tables wider than the output box they sit in (the reader would have to scroll sideways).
  document.querySelectorAll('div.cell_output table').forEach(table => {
    const box = table.closest('div.output') || table.parentElement;
    if (table.getBoundingClientRect().width > box.getBoundingClientRect().width + 1) {
      out.wide.push(Array.from(table.querySelectorAll('th')).map(th => th.innerText.trim()).filter(t => t).slice(0, 4).join(' | '));
    }
  });
  document.querySelectorAll('div.cell:not(.tag_hide-input):not(.tag_remove-input) div.cell_input pre').forEach(pre => {
    if (pre.clientWidth > 0 && pre.scrollWidth > pre.clientWidth + 1) out.overflow.push(pre.innerText.split('\n').sort((a, b) => b.length - a.length)[0]);
  });
  const el = document.createElement('pre');
  el.id = 'simflib-layout';
  el.textContent = JSON.stringify(out);
  document.body.appendChild(el);
});
