//! The device tree a guest from files boots with, derived from the one QEMU gave the hypervisor:
//! read with `flat_device_tree`, written with rust-vmm's `vm-fdt` (`FdtWriter`).
//!
//! What changes (docs/guests.md lists it for users):
//! - `/memory`: one node for the guest RAM (`RAM_BASE`, `ram=`), not the host's RAM.
//! - `/chosen`: `bootargs` = the guest command line, `linux,initrd-start/end` = the initrd's
//!   IPAs, `stdout-path` kept; QEMU's `kaslr-seed`/`rng-seed` are dropped (the seed was meant for
//!   the hypervisor).
//! - `/cpus`: only the `cpu@` nodes of the physical CPUs that run the guest's vCPUs (VMPIDR_EL2 =
//!   their MPIDR, so `reg` stays right); `cpu-map` is dropped (it names the others).
//! - Kept as they are: the root's properties, `/psci` (the hypervisor serves PSCI on the same
//!   conduit: it traps SMC, HCR_EL2.TSC, and HVC always traps), the GICv3 (`/intc`) minus its
//!   ITS, the architected timer, the PMU, the PL011 and its clock (`apb-pclk`).
//! - Every other node is removed: virtio-mmio, PCIe, fw-cfg, flash, the PL031/PL061, gpio-keys,
//!   platform-bus, the ITS. They are DMA masters that would be handed guest addresses as if they
//!   were physical (IPA != PA), or devices the hypervisor neither passes through nor emulates.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use flat_device_tree::node::FdtNode;
use flat_device_tree::Fdt;
use vm_fdt::FdtWriter;

/// Top-level nodes the guest keeps, by name without the unit address.
const KEEP: [&str; 8] = [
    "psci", "cpus", "intc", "timer", "pmu", "pl011", "apb-pclk", "chosen",
];

/// What the guest DTB says beyond QEMU's.
pub struct GuestDtb<'a> {
    /// Guest RAM as (IPA, bytes).
    pub ram: (u64, u64),
    /// MPIDR affinity (`reg`) of each CPU that runs a vCPU.
    pub cpus: &'a [u64],
    /// `/chosen/bootargs`.
    pub bootargs: &'a str,
    /// The initrd as (IPA, bytes).
    pub initrd: Option<(u64, u64)>,
}

fn err(e: vm_fdt::Error) -> String {
    format!("writing the guest DTB: {e:?}")
}

fn base_name<'n>(node: &FdtNode<'_, 'n>) -> &'n str {
    node.name.split('@').next().unwrap_or(node.name)
}

/// Writes every property of `node` as it is.
fn copy_properties(w: &mut FdtWriter, node: &FdtNode<'_, '_>) -> Result<(), String> {
    for p in node.properties() {
        if p.name == "phandle" {
            // Through the writer's phandle check (a duplicate would be a broken tree).
            let v = p
                .value
                .try_into()
                .map(u32::from_be_bytes)
                .map_err(|_| format!("{}: phandle is not one cell", node.name))?;
            w.property_phandle(v).map_err(err)?;
        } else {
            w.property(p.name, p.value).map_err(err)?;
        }
    }
    Ok(())
}

/// Copies `node` and everything under it.
fn copy_subtree(w: &mut FdtWriter, node: &FdtNode<'_, '_>) -> Result<(), String> {
    let n = w.begin_node(node.name).map_err(err)?;
    copy_properties(w, node)?;
    for child in node.children() {
        copy_subtree(w, &child)?;
    }
    w.end_node(n).map_err(err)
}

/// Cells of `value` as big-endian `cells`-wide numbers (1 or 2 cells).
fn push_cells(out: &mut Vec<u8>, value: u64, cells: usize) {
    if cells >= 2 {
        out.extend_from_slice(&value.to_be_bytes());
    } else {
        out.extend_from_slice(&(value as u32).to_be_bytes());
    }
}

/// Builds the guest DTB from `host` (QEMU's). Returns the blob and the names of the top-level
/// nodes it removed (for the log).
pub fn build(host: &Fdt<'_>, g: &GuestDtb<'_>) -> Result<(Vec<u8>, Vec<String>), String> {
    let root = host
        .find_node("/")
        .ok_or_else(|| String::from("QEMU's DTB has no root node"))?;
    let cells = root.cell_sizes();
    let mut removed = Vec::new();
    let mut w = FdtWriter::new().map_err(err)?;
    let r = w.begin_node("").map_err(err)?;
    copy_properties(&mut w, &root)?;

    // /memory: the guest RAM.
    let m = w
        .begin_node(&format!("memory@{:x}", g.ram.0))
        .map_err(err)?;
    w.property_string("device_type", "memory").map_err(err)?;
    let mut reg = Vec::new();
    push_cells(&mut reg, g.ram.0, cells.address_cells as usize);
    push_cells(&mut reg, g.ram.1, cells.size_cells as usize);
    w.property("reg", &reg).map_err(err)?;
    w.end_node(m).map_err(err)?;

    for node in root.children() {
        let name = base_name(&node);
        if name == "memory" {
            continue; // Replaced above.
        }
        if !KEEP.contains(&name) {
            removed.push(String::from(node.name));
            continue;
        }
        match name {
            "chosen" => {
                let n = w.begin_node(node.name).map_err(err)?;
                w.property_string("bootargs", g.bootargs).map_err(err)?;
                if let Some((ipa, size)) = g.initrd {
                    w.property_u64("linux,initrd-start", ipa).map_err(err)?;
                    w.property_u64("linux,initrd-end", ipa + size)
                        .map_err(err)?;
                }
                if let Some(p) = node.property("stdout-path") {
                    w.property(p.name, p.value).map_err(err)?;
                }
                w.end_node(n).map_err(err)?;
            }
            "cpus" => {
                let n = w.begin_node(node.name).map_err(err)?;
                copy_properties(&mut w, &node)?;
                for cpu in node.children() {
                    let mpidr = cpu.reg().next().map(|r| r.starting_address as u64);
                    let ours =
                        base_name(&cpu) == "cpu" && mpidr.is_some_and(|m| g.cpus.contains(&m));
                    if ours {
                        copy_subtree(&mut w, &cpu)?;
                    } else {
                        removed.push(format!("cpus/{}", cpu.name));
                    }
                }
                w.end_node(n).map_err(err)?;
            }
            "intc" => {
                let n = w.begin_node(node.name).map_err(err)?;
                copy_properties(&mut w, &node)?;
                for child in node.children() {
                    let its = child
                        .compatible()
                        .is_some_and(|c| c.all().any(|s| s == "arm,gic-v3-its"));
                    if its {
                        removed.push(format!("{}/{}", node.name, child.name));
                    } else {
                        copy_subtree(&mut w, &child)?;
                    }
                }
                w.end_node(n).map_err(err)?;
            }
            _ => copy_subtree(&mut w, &node)?,
        }
    }
    w.end_node(r).map_err(err)?;
    Ok((w.finish().map_err(err)?, removed))
}

/// The MMIO windows of QEMU's `virtio,mmio` transports (`reg` of each such top-level node), which
/// `build` removes from the guest's DTB: the guest reads them as zero (passthrough.rs), because
/// kvm-unit-tests probes them whatever its DTB says (micro-bench reads 0x0a00_0008, a transport's
/// Version register; zero there means "no virtio device").
pub fn virtio_windows(host: &Fdt<'_>) -> Vec<(u64, u64)> {
    let Some(root) = host.find_node("/") else {
        return Vec::new();
    };
    root.children()
        .filter(|n| {
            n.compatible()
                .is_some_and(|c| c.all().any(|s| s == "virtio,mmio"))
        })
        .flat_map(|n| {
            n.reg()
                .map(|r| (r.starting_address as u64, r.size.unwrap_or(0) as u64))
        })
        .filter(|&(_, size)| size > 0)
        .collect()
}
