/**
 * Charts as SVG files from vega-lite specs (vega renders them headless: no browser, no canvas), for
 * `npm run sim -- --plot` and `npm run bench:kv -- --plot`.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';

export async function renderSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** Writes `name`.svg under `dir`; returns its path. */
export async function writeChart(dir: string, name: string, spec: TopLevelSpec): Promise<string> {
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.svg`);
  writeFileSync(path, await renderSvg({ ...spec, config: { font: 'sans-serif', legend: { labelLimit: 0 }, ...(spec.config ?? {}) } } as TopLevelSpec));
  return path;
}
