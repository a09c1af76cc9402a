/** The lifecycle e2e in today's sandbox mode: qemu as root, no security driver, corral as root. */
import { lifecycleSuite } from './lifecycle.js';

lifecycleSuite('sandbox');
