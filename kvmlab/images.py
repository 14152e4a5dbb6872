"""Build the lab's Debian image locally with mmdebstrap and cache it by recipe hash."""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kvmlab import settings
from kvmlab.errors import HarnessError
from kvmlab.model import DEFAULT_RELEASE, RELEASES
from kvmlab.templating import render_template

ROOT_LABEL = "kvmlab-root"
ROOT_SIZE_GIB = 8
RECIPE_VERSION = 6

# The base of every node; each role package adds what it needs (guests have no internet at run time).
BASE_PACKAGES = (
    "linux-image-cloud-amd64",
    # The kernel of nodes with a screen: it has the DRM drivers (bochs, qxl, virtio-gpu) the cloud kernel lacks.
    "linux-image-amd64",
    "pciutils",
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "dbus",
    "kmod",
    "iproute2",
    "iputils-ping",
    "netbase",
    "procps",
    "less",
    "ca-certificates",
    "openssh-server",
    "lz4",
    "cloud-init",
    "chrony",
    "qemu-guest-agent",  # sets a restored node's clock with no SSH round trip (checkpoints.py)
    "python3",
    "e2fsprogs",
    "parted",
)


def packages(release: str = DEFAULT_RELEASE) -> list[str]:
    from kvmlab.roles import image_packages

    return sorted({*BASE_PACKAGES, *image_packages(release)})


# Started by the roles that need them, never at boot.
DISABLED_UNITS = [
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "man-db.timer",
    "e2scrub_all.timer",
    "fstrim.timer",
    "logrotate.timer",
    "dpkg-db-backup.timer",
    "nfs-server.service",
    "rpcbind.service",
    "rpcbind.socket",
    "glusterd.service",
    "ceph.target",
    "ceph-mon.target",
    "ceph-mgr.target",
    "ceph-osd.target",
    "ceph-crash.service",
    "libvirtd.service",
    "libvirtd.socket",
    "libvirtd-ro.socket",
    "libvirtd-admin.socket",
    "libvirt-guests.service",
    "virtlogd.socket",
    "virtlockd.socket",
    "virtlogd-admin.socket",
    "virtlockd-admin.socket",
    "iscsid.socket",
    "iscsid.service",
    "open-iscsi.service",
    "multipathd.service",
    "multipathd.socket",
    "rtslib-fb-targetctl.service",
    "mdmonitor.service",
    "lvm2-monitor.service",
    "lvm2-lvmpolld.socket",
    "blk-availability.service",
    "smartmontools.service",
    "ssh.socket",
    "nfs-client.target",
    "rpc-statd-notify.service",
    "nvmf-autoconnect.service",
    "remote-fs.target",
    "rbdmap.service",
]
MASKED_UNITS = [
    "systemd-networkd-wait-online.service",
    "apt-daily.service",
    "apt-daily-upgrade.service",
    "e2scrub_reap.service",
]


@dataclass(frozen=True)
class Image:
    """A built image: root disk plus the kernel and initrd it boots with."""

    digest: str
    directory: Path

    @property
    def root(self) -> Path:
        return self.directory / "root.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def display_kernel(self) -> Path:
        return self.directory / "vmlinuz-display"

    @property
    def display_initrd(self) -> Path:
        return self.directory / "initrd-display.img"

    def boot_files(self) -> tuple[tuple[str, Path], ...]:
        """Each file a node boots from, by the suffix of its volume in the pool."""
        return (
            ("vmlinuz", self.kernel),
            ("initrd", self.initrd),
            ("vmlinuz-display", self.display_kernel),
            ("initrd-display", self.display_initrd),
        )

    @property
    def packed_root(self) -> Path:
        """The root disk with its clusters zstd-compressed: what is sent to a remote host (see packed_root())."""
        return self.directory / "root.zst.qcow2"

    def exists(self) -> bool:
        return all(p.exists() for p in (self.root, *(path for _, path in self.boot_files()), self.directory / "recipe.json"))


def packed_root(image: Image, progress: Progress | None = None) -> Path:
    """IMAGE's root disk as a zstd-compressed qcow2, made once and kept beside it.

    A remote host's upload is bound by the bytes its (often emulated) sshd and libvirtd take in, and
    the compressed copy is about a third of the size (1.24 GiB to 0.46 GiB, in ~7 s here). QEMU reads
    compressed clusters natively, so nodes boot from it as from the plain one; local labs keep the
    plain file, which costs no decompression.
    """
    packed = image.packed_root
    if packed.exists():
        return packed
    with open(image.directory.parent / f"{image.digest}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs packing at once: one packs, the other waits and reuses
        if packed.exists():
            return packed
        partial = packed.with_name(packed.name + ".partial")
        _run(
            ["qemu-img", "convert", "-c", "-O", "qcow2", "-o", "compression_type=zstd", str(image.root), str(partial)],
            "compress the root disk for remote hosts",
            progress or _print_progress,
        )
        partial.rename(packed)  # whole or absent: a killed convert leaves only the .partial, redone next time
    return packed


def customize_script() -> str:
    return render_template(
        "image/customize.sh.j2",
        {
            "root_label": ROOT_LABEL,
            "cloud_cfg": render_template("image/cloud.cfg.j2", {}).rstrip("\n"),
            "firstboot_script": render_template("image/kvmlab-firstboot.sh.j2", {}).rstrip("\n"),
            "firstboot_unit": render_template("image/kvmlab-firstboot.service.j2", {}).rstrip("\n"),
            "seed_wait_unit": render_template("image/kvmlab-seed-wait.service.j2", {}).rstrip("\n"),
            "disabled_units": DISABLED_UNITS,
            "masked_units": MASKED_UNITS,
        },
    )


def recipe(release: str = DEFAULT_RELEASE) -> dict:
    if release not in RELEASES:
        raise HarnessError(f"no image recipe for Debian release '{release}': kvmlab builds {', '.join(RELEASES)}")
    return {
        "version": RECIPE_VERSION,
        "suite": release,
        "mirror": settings.debian_mirror(),
        "packages": packages(release),
        "customize": customize_script(),
        "root_size_gib": ROOT_SIZE_GIB,
    }


def recipe_digest(rec: dict | None = None, release: str = DEFAULT_RELEASE) -> str:
    blob = json.dumps(rec or recipe(release), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def cached_image(release: str = DEFAULT_RELEASE) -> Image:
    digest = recipe_digest(release=release)
    return Image(digest, settings.cache_dir() / "images" / digest)


def current_digests() -> set[str]:
    """The recipe hash of every release's image as kvmlab builds it today (older ones are stale)."""
    return {recipe_digest(release=r) for r in RELEASES}


Progress = Callable[[str], None]
BUILD_PREFIX = "kvmlab-image-"


def remove_stale_builds(images_dir: Path, held_digest: str | None = None) -> list[Path]:
    """Remove build directories that no running build owns (a killed build leaves one), and half-packed roots.

    HELD_DIGEST is a recipe whose build lock the caller holds: its directories are stale.
    """
    stale = [(tmp.name[len(BUILD_PREFIX) :].split("-", 1)[0], tmp) for tmp in images_dir.glob(f"{BUILD_PREFIX}*")]
    # A killed packed_root() leaves its half-written copy (up to ~0.5 GiB), under the same lock.
    stale += [(partial.parent.name, partial) for partial in images_dir.glob("*/root.zst.qcow2.partial")]
    removed = []
    for digest, path in stale:
        with open(images_dir / f"{digest}.lock", "a") as lock:
            if digest != held_digest:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # its build or packing is still running
            if path.is_dir():
                _unmount_below(path)
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _unmount_below(path: Path) -> None:
    """A build killed inside the chroot can leave /proc, /sys or /dev mounted there; never delete through them."""
    root = str(path.resolve())
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for mount in sorted((m for m in mounts if m == root or m.startswith(root + "/")), reverse=True):
        subprocess.run(["umount", "-l", mount], check=False, capture_output=True)
    if any(m.startswith(root + "/") for m in (ln.split()[1] for ln in Path("/proc/mounts").read_text().splitlines())):
        raise HarnessError(f"cannot unmount everything below {root}; remove it by hand after checking `findmnt`")


def _print_progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ensure_image(progress: Progress = _print_progress, force: bool = False, release: str = DEFAULT_RELEASE) -> Image:
    """Return RELEASE's cached image, building it first if its recipe changed."""
    image = cached_image(release)
    if image.exists() and not force:
        return image
    image.directory.parent.mkdir(parents=True, exist_ok=True)
    lock_path = image.directory.parent / f"{image.digest}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # a parallel build of the same recipe waits for ours
        if image.exists() and not force:
            return image
        remove_stale_builds(image.directory.parent, held_digest=image.digest)
        _build(image, release, progress)
    return image


def _run(cmd: list[str], what: str, progress: Progress) -> None:
    progress(f"image: {what}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        tail = [*tail, line][-30:]
        if line.startswith(("I: ", "E: ", "W: ")):
            progress(f"image:   {line}")
    if proc.wait() != 0:
        raise HarnessError(f"image build step '{what}' failed (exit {proc.returncode}): {' '.join(cmd)}\n" + "\n".join(tail))


def _build(image: Image, release: str, progress: Progress) -> None:
    for tool in ("mmdebstrap", "mkfs.ext4", "qemu-img"):
        if not shutil.which(tool):
            raise HarnessError(f"'{tool}' is not installed: run `make deps` (apt-get install mmdebstrap e2fsprogs qemu-utils)")
    started = time.monotonic()
    rec = recipe(release)
    mirror = rec["mirror"]
    sources = [
        f"deb {mirror} {release} main",
        f"deb {mirror} {release}-updates main",
        f"deb {mirror.replace('/debian', '/debian-security')} {release}-security main",
    ]
    image.directory.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"{BUILD_PREFIX}{image.digest}-", dir=image.directory.parent) as tmp:
        work = Path(tmp)
        rootfs, script = work / "rootfs", work / "customize.sh"
        script.write_text(rec["customize"])
        _run(
            [
                "mmdebstrap",
                "--mode=root",
                "--variant=apt",
                "--verbose",
                "--include=" + ",".join(rec["packages"]),
                "--customize-hook=sh " + str(script) + ' "$1"',
                release,
                str(rootfs),
                *sources,
            ],
            f"mmdebstrap {release} with {len(rec['packages'])} packages",
            progress,
        )
        out = work / "out"
        out.mkdir()
        for flavour, kernel, initrd in (("cloud-amd64", "vmlinuz", "initrd.img"), ("amd64", "vmlinuz-display", "initrd-display.img")):
            kernels = sorted((rootfs / "boot").glob(f"vmlinuz-*-{flavour}"))
            initrds = sorted((rootfs / "boot").glob(f"initrd.img-*-{flavour}"))
            if flavour == "amd64":  # the glob matches the cloud kernel's name too
                kernels, initrds = [k for k in kernels if "-cloud-" not in k.name], [i for i in initrds if "-cloud-" not in i.name]
            if not kernels or not initrds:
                raise HarnessError(f"image build: no {flavour} kernel or initrd under /boot of the new root")
            shutil.copyfile(kernels[-1], out / kernel)
            shutil.copyfile(initrds[-1], out / initrd)
        raw = work / "root.raw"
        _run(
            ["mkfs.ext4", "-q", "-F", "-L", ROOT_LABEL, "-d", str(rootfs), str(raw), f"{ROOT_SIZE_GIB}G"],
            "make ext4 root filesystem",
            progress,
        )
        _run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(out / "root.qcow2")], "convert to qcow2", progress)
        (out / "recipe.json").write_text(json.dumps(rec, indent=1, sort_keys=True))
        if image.directory.exists():
            shutil.rmtree(image.directory)
        out.rename(image.directory)
    progress(f"image: built {image.directory} in {time.monotonic() - started:.0f} s")
