// Loads UI workflows into the ComfyUI frontend in headless chromium and reports, per workflow, the node
// types the frontend does not know and the API prompt it converts the graph to (app.graphToPrompt).
//
// node load_workflows.mjs --url URL --chromium PATH --profile DIR [--screenshot PNG] [--viewport WxH] WORKFLOW.json...
// Prints one JSON object on stdout: {"frontend": version, "workflows": {path: {missing, nodes, prompt}}}.
// --screenshot: a picture of the first workflow, the whole graph fitted into the window.
import { chromium } from 'playwright-core';
import { readFileSync } from 'node:fs';

function parse(argv) {
  const options = { workflows: [] };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    if (['--url', '--chromium', '--profile', '--screenshot', '--viewport'].includes(flag)) options[flag.slice(2)] = argv[++i];
    else options.workflows.push(flag);
  }
  for (const required of ['url', 'chromium', 'profile']) {
    if (!options[required]) throw new Error(`--${required} is required`);
  }
  return options;
}

const options = parse(process.argv.slice(2));
const [width, height] = (options.viewport ?? '1800x1000').split('x').map(Number);
const browser = await chromium.launchPersistentContext(options.profile, {
  executablePath: options.chromium,
  headless: true,
  viewport: { width, height },
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync'],
});
const report = { workflows: {} };
try {
  const page = browser.pages()[0] || await browser.newPage();
  page.setDefaultTimeout(60000);
  await page.goto(options.url, { waitUntil: 'domcontentloaded' });
  await page.waitForFunction(() => window.app?.graph && window.LiteGraph?.registered_node_types?.KSampler);
  report.frontend = await page.evaluate(() => window.__COMFYUI_FRONTEND_VERSION__ ?? null);
  for (const [index, path] of options.workflows.entries()) {
    const workflow = JSON.parse(readFileSync(path, 'utf8'));
    report.workflows[path] = await page.evaluate(async (graph) => {
      const known = window.LiteGraph.registered_node_types;
      const missing = [...new Set(graph.nodes.map((n) => n.type).filter((type) => !known[type]))];
      await window.app.loadGraphData(structuredClone(graph), true, true, null);
      const nodes = window.app.graph.nodes.map((n) => ({ id: n.id, type: n.type, title: n.title }));
      const { output } = await window.app.graphToPrompt();
      return { missing, nodes, prompt: output };
    }, workflow);
    if (index === 0 && options.screenshot) {
      await page.keyboard.press('Escape');
      const clip = await page.evaluate(() => {
        const canvas = window.app.canvas;
        const nodes = window.app.graph.nodes;
        const items = [...nodes, ...window.app.graph.groups];
        const left = Math.min(...items.map((n) => n.pos[0]));
        const top = Math.min(...items.map((n) => n.pos[1])) - 40;
        const right = Math.max(...items.map((n) => n.pos[0] + n.size[0]));
        const bottom = Math.max(...items.map((n) => n.pos[1] + n.size[1]));
        const [sidebar, toolbar, margin] = [70, 100, 20];  // screen pixels the frontend's own panels cover
        const element = canvas.canvas;
        const scale = Math.min((element.width - sidebar - margin) / (right - left), (element.height - toolbar - margin) / (bottom - top));
        canvas.ds.scale = scale;
        canvas.ds.offset = [sidebar / scale - left, toolbar / scale - top];
        canvas.setDirty(true, true);
        return { x: sidebar - 10, y: toolbar - 6, width: (right - left) * scale + 20, height: (bottom - top) * scale + 20 };
      });
      await page.waitForTimeout(1500);
      await page.screenshot({ path: options.screenshot, clip });
    }
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(report));
