/**
 * Whose kernels and gradients the backends run: the library's replacements or tfjs's own.
 * Each module that replaces kernels follows the setting (`followLibraryKernels`): the cpu
 * kernels (cpu_kernels.ts) and the wasm ones (wasm_kernels.ts).
 */
import {useLibraryGradients} from './gradients';
import {useOwnKernels} from './library_kernels';
import {useFlexKernels} from './wasm_flex';

/** Whose kernels and gradients the backends run: the library's replacements, or tfjs's own. */
export type LibraryKernels = 'library' | 'tfjs';
let setting: LibraryKernels = 'library';

/** The setting of setLibraryKernels now. */
export function libraryKernelsInUse(): LibraryKernels {
  return setting;
}

const followers: ((which: LibraryKernels) => void)[] = [];

/** Lets a module's replacements follow setLibraryKernels: `apply` runs at each change of the setting. */
export function followLibraryKernels(apply: (which: LibraryKernels) => void): void {
  followers.push(apply);
}

/**
 * Puts tfjs's own kernels and gradients back in place of the library's replacements
 * ('tfjs'), on every backend, or the library's again ('library'); kernels the library adds
 * because tfjs lacks them stay, and its own kernels (library_kernels.ts: column sums, Adam)
 * go unused under 'tfjs'. The setting holds for backends started later too. The way to opt
 * out of the replacements (they change speed, missing gradients and a few tfjs 4.22 bugs),
 * and how the bench measures what they gain (bench --suite step). Returns the previous setting.
 */
export function setLibraryKernels(which: LibraryKernels): LibraryKernels {
  const previous = setting;
  if (which === setting) return previous;
  setting = which;
  useLibraryGradients(which === 'library');
  useOwnKernels(which === 'library');
  useFlexKernels(which === 'library');
  for (const apply of followers) apply(which);
  return previous;
}
