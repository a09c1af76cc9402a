/**
 * The lifecycle e2e on Debian's packaged libvirt configuration (qemu as libvirt-qemu, dynamic
 * ownership, guest stdio through virtlogd), with corral as the unprivileged user `corral`.
 */
import { lifecycleSuite } from './lifecycle.js';

lifecycleSuite('stock');
