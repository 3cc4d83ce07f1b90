//! Unit tests of each operation, with the TLB calls recorded and checked against the entry's
//! state at the moment of each call.

use std::sync::Arc;

use stage2::testing::{CountingPool, RecordingTlb, TlbOp};
use stage2::{
    Attrs, Config, Error, Guard, Mapped, MemAttrEncoding, PagePool, Perms, Pte, Size, Stage2,
};

type S2 = Stage2<Arc<CountingPool>, Arc<RecordingTlb>>;
type G<'s> = Guard<'s, Arc<CountingPool>, Arc<RecordingTlb>>;

const MB2: u64 = 2 << 20;
const RAM: u64 = 0x4000_0000;

fn setup(pages: usize) -> (S2, Arc<CountingPool>, Arc<RecordingTlb>) {
    let pool = Arc::new(CountingPool::new(pages));
    let tlb = Arc::new(RecordingTlb::new(pool.clone()));
    let mut cfg = Config::new(32, 2);
    cfg.start_level = Some(1);
    let s2 = Stage2::new(cfg, pool.clone(), tlb.clone()).unwrap();
    tlb.attach(s2.root(), s2.geometry());
    (s2, pool, tlb)
}

/// Maps `pages` 4 KiB pages from IPA `MB2` (page `i` at `RAM + i * 4 KiB`) into one level-3
/// table, read-write-execute and young.
fn map_pages(g: &G<'_>, pages: u64) {
    for i in 0..pages {
        g.map(
            MB2 + i * 0x1000,
            RAM + i * 0x1000,
            Size::Page4K,
            Attrs::normal_rwx(),
        )
        .unwrap();
    }
}

/// Tear down and check the pool got every page back and every table's count was right.
fn finish(s2: S2, pool: &CountingPool) {
    check_counts(&s2);
    s2.destroy(0).unwrap();
    assert_eq!(pool.in_use(), 0, "pages leaked");
    assert_eq!(pool.allocs(), pool.frees());
}

fn check_counts(s2: &S2) {
    let g = s2.exclusive(0);
    g.for_each_table(|pa, level, count, used| {
        assert_eq!(
            count,
            used + 1,
            "table {pa:#x} at level {level}: refcount {count}, {used} entries used"
        );
    });
}

#[test]
fn map_then_translate_and_no_tlbi_for_invalid_to_valid() {
    let (s2, pool, tlb) = setup(64);
    let g = s2.shared(0);
    assert_eq!(
        g.map(0x1000, RAM + 0x5000, Size::Page4K, Attrs::normal_rwx()),
        Ok(Mapped::Installed)
    );
    let t = g.translate(0x1abc).unwrap();
    assert_eq!(
        (t.pa, t.level, t.attrs),
        (RAM + 0x5abc, 3, Attrs::normal_rwx())
    );
    assert_eq!(g.translate(0x2000), None);
    drop(g);
    // Two tables (level 2 and 3) were installed and one leaf: no invalidation, one publish.
    assert_eq!(tlb.take(), vec![TlbOp::Publish]);
    let st = s2.stats();
    assert_eq!(
        (st.maps, st.tables_alloc, st.tlbi(), st.tlbi_elided),
        (1, 2, 0, 3)
    );
    finish(s2, &pool);
}

#[test]
fn identical_map_is_spurious_and_perm_only_change_is_retry() {
    let (s2, pool, tlb) = setup(64);
    let g = s2.shared(0);
    g.map(0x1000, RAM, Size::Page4K, Attrs::normal(Perms::RX))
        .unwrap();
    assert_eq!(
        g.map(0x1000, RAM, Size::Page4K, Attrs::normal(Perms::RX)),
        Ok(Mapped::Spurious)
    );
    assert_eq!(
        g.map(0x1000, RAM, Size::Page4K, Attrs::normal_rwx()),
        Err(Error::Retry)
    );
    assert_eq!(
        g.translate(0x1000).unwrap().attrs.perms,
        Perms::RX,
        "no break happened"
    );
    drop(g);
    assert!(!tlb
        .take()
        .iter()
        .any(|op| matches!(op, TlbOp::Ipa { .. } | TlbOp::Range { .. })));
    finish(s2, &pool);
}

#[test]
fn remap_to_other_page_is_bbm_with_tlbi_while_locked() {
    let (s2, pool, tlb) = setup(64);
    let g = s2.shared(0);
    g.map(0x3000, RAM, Size::Page4K, Attrs::normal_rwx())
        .unwrap();
    tlb.take();
    assert_eq!(
        g.map(0x3000, RAM + 0x1000, Size::Page4K, Attrs::normal_rwx()),
        Ok(Mapped::Replaced)
    );
    assert_eq!(g.translate(0x3000).unwrap().pa, RAM + 0x1000);
    drop(g);
    // Exactly one invalidation, by IPA at level 3, issued while the entry was LOCKED (after the
    // break, before the make), then the publish.
    assert_eq!(
        tlb.take(),
        vec![
            TlbOp::Ipa {
                ipa: 0x3000,
                level: 3,
                entry: Some(Pte::LOCKED.0)
            },
            TlbOp::Publish
        ]
    );
    assert_eq!(s2.stats().bbm, 1);
    finish(s2, &pool);
}

#[test]
fn page_fault_inside_block_splits_it() {
    let (s2, pool, tlb) = setup(64);
    let g = s2.shared(0);
    g.map(MB2, RAM, Size::Block2M, Attrs::normal(Perms::RX))
        .unwrap();
    assert_eq!(g.translate(MB2 + 0x7000).unwrap().level, 2);
    tlb.take();
    // A write fault during dirty logging wants a writable page where the RX block is.
    assert_eq!(
        g.map(
            MB2 + 0x7000,
            RAM + 0x7000,
            Size::Page4K,
            Attrs::normal_rwx()
        ),
        Ok(Mapped::Installed)
    );
    let t = g.translate(MB2 + 0x7000).unwrap();
    assert_eq!(
        (t.pa, t.level, t.attrs.perms),
        (RAM + 0x7000, 3, Perms::RWX)
    );
    // The rest of the block refaults lazily.
    assert_eq!(g.translate(MB2 + 0x8000), None);
    drop(g);
    assert_eq!(
        tlb.take(),
        vec![
            TlbOp::Ipa {
                ipa: MB2,
                level: 2,
                entry: Some(Pte::LOCKED.0)
            },
            TlbOp::Publish
        ]
    );
    assert_eq!((s2.stats().splits, s2.stats().bbm), (1, 1));
    finish(s2, &pool);
}

#[test]
fn collapse_prunes_subtree_with_one_range_tlbi_and_rcu_free() {
    let (s2, pool, tlb) = setup(64);
    let g = s2.shared(0);
    map_pages(&g, 8);
    let before = pool.in_use();
    tlb.take();
    assert_eq!(
        g.collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx()),
        Ok(Mapped::Replaced)
    );
    assert_eq!(
        g.translate(MB2 + 0x1234).unwrap(),
        stage2::Translation {
            pa: RAM + 0x1234,
            level: 2,
            attrs: Attrs::normal_rwx(),
            young: true,
            dbm: false,
        }
    );
    // The level-3 table is retired, not freed: we are still inside our read-side section.
    assert_eq!(pool.in_use(), before);
    assert_eq!(s2.deferred(0), 1);
    drop(g);
    assert_eq!(
        tlb.take(),
        vec![
            TlbOp::Range {
                ipa: MB2,
                size: MB2,
                entry: Some(Pte::LOCKED.0)
            },
            TlbOp::Publish
        ],
        "one span invalidation, no level hint, while the table entry was LOCKED"
    );
    s2.reclaim(0);
    assert_eq!(pool.in_use(), before - 1, "freed after the grace period");
    let st = s2.stats();
    assert_eq!(
        (
            st.prunes,
            st.tables_retired,
            st.tables_reclaimed,
            st.grace_periods
        ),
        (1, 1, 1, 1)
    );
    finish(s2, &pool);
}

#[test]
fn reclaim_waits_for_a_reader_on_another_cpu() {
    let (s2, pool, _tlb) = setup(64);
    let g0 = s2.shared(0);
    g0.map(MB2, RAM, Size::Page4K, Attrs::normal_rwx()).unwrap();
    drop(g0);
    let reader = s2.shared(1); // CPU 1 enters before the unlink: it may hold the old table
    let g0 = s2.shared(0);
    g0.collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx())
        .unwrap();
    drop(g0);
    s2.reclaim(0);
    assert_eq!(s2.deferred(0), 1, "CPU 1 is still inside: no free");
    drop(reader);
    s2.reclaim(0);
    assert_eq!(s2.deferred(0), 0);
    let _ = pool.in_use();
    finish(s2, &pool);
}

#[test]
fn a_reader_that_entered_after_the_unlink_does_not_delay_the_free() {
    let (s2, pool, _tlb) = setup(64);
    let g0 = s2.shared(0);
    g0.map(MB2, RAM, Size::Page4K, Attrs::normal_rwx()).unwrap();
    g0.collapse(MB2, RAM, Size::Block2M, Attrs::normal_rwx())
        .unwrap();
    drop(g0);
    let late = s2.shared(1); // saw the new epoch: cannot reach the unlinked table
    s2.reclaim(0);
    assert_eq!(s2.deferred(0), 0);
    drop(late);
    finish(s2, &pool);
}

#[test]
fn relax_perms_always_invalidates_locally() {
    let (s2, pool, tlb) = setup(64);
    let g = s2.shared(0);
    g.map(0x5000, RAM, Size::Page4K, Attrs::normal(Perms::RX))
        .unwrap();
    tlb.take();
    assert_eq!(g.relax_perms(0x5000, Perms::W), Ok(()));
    assert_eq!(g.translate(0x5000).unwrap().attrs.perms, Perms::RWX);
    // Already relaxed by "another vCPU": still invalidates.
    assert_eq!(g.relax_perms(0x5000, Perms::W), Ok(()));
    // Nothing mapped: back off, and still invalidate.
    assert_eq!(g.relax_perms(0x9000, Perms::W), Err(Error::Retry));
    drop(g);
    assert_eq!(
        tlb.take(),
        vec![
            TlbOp::Local {
                ipa: 0x5000,
                level: 3
            },
            TlbOp::Local {
                ipa: 0x5000,
                level: 3
            },
            TlbOp::Local {
                ipa: 0x9000,
                level: 3
            },
        ]
    );
    assert_eq!(s2.stats().relaxes, 1);
    finish(s2, &pool);
}

#[test]
fn write_protect_and_unmap_batch_one_invalidation_and_free_empty_tables() {
    let (s2, pool, tlb) = setup(64);
    {
        let g = s2.shared(0);
        map_pages(&g, 16);
        g.map(2 * MB2, RAM + MB2, Size::Block2M, Attrs::normal_rwx())
            .unwrap();
    }
    tlb.take();
    let g = s2.exclusive(0);
    let wp = g.write_protect(MB2, 3 * MB2).unwrap();
    assert_eq!((wp.leaves, wp.flushed), (17, true));
    assert_eq!(g.translate(MB2 + 0x3000).unwrap().attrs.perms, Perms::RX);
    assert_eq!(
        g.translate(2 * MB2 + 0x3000).unwrap().attrs.perms,
        Perms::RX
    );
    assert_eq!(
        tlb.take(),
        vec![TlbOp::Leaves {
            ipa: MB2,
            size: 2 * MB2,
        }]
    );
    // Unmap half of the pages: the table stays.
    let um = g.unmap(MB2, MB2 + 8 * 0x1000).unwrap();
    assert_eq!((um.leaves, um.tables), (8, 0));
    assert_eq!(g.translate(MB2 + 0x9000).unwrap().pa, RAM + 0x9000);
    // Unmap the rest: the level-3 table empties and is unlinked; one invalidation each time.
    let before = pool.in_use();
    let um = g.unmap(MB2 + 8 * 0x1000, 2 * MB2).unwrap();
    assert_eq!((um.leaves, um.tables, um.flushed), (8, 1, true));
    assert_eq!(
        tlb.take()
            .iter()
            .filter(|op| matches!(op, TlbOp::Range { .. }))
            .count(),
        2
    );
    drop(g);
    s2.reclaim(0);
    assert_eq!(pool.in_use(), before - 1);
    let g = s2.exclusive(0);
    assert_eq!(g.unmap(0, 1 << 32).unwrap().leaves, 1, "the block");
    drop(g);
    finish(s2, &pool);
}

#[test]
fn dry_pool_fails_cleanly_and_leaves_nothing_locked() {
    let (s2, pool, _tlb) = setup(64);
    pool.set_budget(1);
    let g = s2.shared(0);
    assert_eq!(
        g.map(0x1000, RAM, Size::Page4K, Attrs::normal_rwx()),
        Err(Error::NoMemory)
    );
    pool.set_budget(u64::MAX);
    assert_eq!(
        g.map(0x1000, RAM, Size::Page4K, Attrs::normal_rwx()),
        Ok(Mapped::Installed)
    );
    // A split that cannot get its table leaves the block as it was.
    g.map(MB2, RAM, Size::Block2M, Attrs::normal(Perms::RX))
        .unwrap();
    pool.set_budget(0);
    assert_eq!(
        g.map(MB2, RAM, Size::Page4K, Attrs::normal_rwx()),
        Err(Error::NoMemory)
    );
    assert_eq!(g.translate(MB2 + 0x10).unwrap().level, 2);
    pool.set_budget(u64::MAX);
    drop(g);
    assert_eq!(s2.stats().no_memory, 2);
    finish(s2, &pool);
}

#[test]
fn bad_addresses_are_rejected() {
    let (s2, pool, _tlb) = setup(64);
    let g = s2.shared(0);
    assert_eq!(
        g.map(0x1001, RAM, Size::Page4K, Attrs::normal_rwx()),
        Err(Error::BadAddress)
    );
    assert_eq!(
        g.map(0x1000, RAM + 1, Size::Page4K, Attrs::normal_rwx()),
        Err(Error::BadAddress)
    );
    assert_eq!(
        g.map(1 << 32, RAM, Size::Page4K, Attrs::normal_rwx()),
        Err(Error::BadAddress)
    );
    assert_eq!(
        g.map(MB2 + 0x1000, RAM, Size::Block2M, Attrs::normal_rwx()),
        Err(Error::BadAddress)
    );
    assert_eq!(
        g.collapse(0, RAM, Size::Page4K, Attrs::normal_rwx()),
        Err(Error::BadAddress)
    );
    drop(g);
    finish(s2, &pool);
}

#[test]
#[should_panic(expected = "LOCKED stage-2 entry seen under the exclusive MMU lock")]
fn exclusive_mode_asserts_on_locked_entries() {
    let (s2, pool, tlb) = setup(64);
    let g = s2.exclusive(0);
    g.map(0x1000, RAM, Size::Page4K, Attrs::normal_rwx())
        .unwrap();
    // Corrupt the table the way a buggy shared walker would: leave an entry LOCKED.
    let l3 = tlb.entry_at(0x1000, 2).map(|e| Pte(e).addr()).unwrap();
    pool.table(l3)[1].store(Pte::LOCKED.0, std::sync::atomic::Ordering::SeqCst);
    let _ = g.map(0x1000, RAM + 0x1000, Size::Page4K, Attrs::normal_rwx());
}

#[test]
fn forty_bit_geometry_uses_concatenated_root() {
    let pool = Arc::new(CountingPool::new(32));
    let tlb = Arc::new(RecordingTlb::new(pool.clone()));
    let s2 = Stage2::new(Config::new(40, 1), pool.clone(), tlb.clone()).unwrap();
    assert_eq!(
        s2.root() % 8192,
        0,
        "two concatenated tables, 8 KiB aligned"
    );
    let g = s2.shared(0);
    // An IPA above 512 GiB indexes the second root page.
    let ipa = (600u64 << 30) + 0x2000;
    g.map(ipa, RAM, Size::Page4K, Attrs::normal_rwx()).unwrap();
    assert_eq!(g.translate(ipa).unwrap().pa, RAM);
    let root1 = pool.table(s2.root() + 4096);
    assert!(root1
        .iter()
        .any(|e| e.load(std::sync::atomic::Ordering::SeqCst) != 0));
    drop(g);
    check_counts(&s2);
    s2.destroy(0).unwrap();
    assert_eq!(pool.in_use(), 0);
}

#[test]
fn fwb_encoding_is_written_kept_and_read_back() {
    // With HCR_EL2.FWB = 1 the hypervisor builds the table with `ForcedWriteBack`: guest RAM
    // leaves carry MemAttr = 0b0110 (forced Normal Write-Back, Arm ARM D8.6.6), device leaves
    // 0b0001; write-protect and relax change only permissions, never the encoding.
    let pool = Arc::new(CountingPool::new(64));
    let tlb = Arc::new(RecordingTlb::new(pool.clone()));
    let mut cfg = Config::new(32, 1);
    cfg.start_level = Some(1);
    cfg.memattr = MemAttrEncoding::ForcedWriteBack;
    let s2 = Stage2::new(cfg, pool.clone(), tlb.clone()).unwrap();
    tlb.attach(s2.root(), s2.geometry());
    assert_eq!(s2.memattr(), MemAttrEncoding::ForcedWriteBack);
    let memattr = |ipa: u64, level: u8| (tlb.entry_at(ipa, level).unwrap() >> 2) & 0xF;
    {
        let g = s2.shared(0);
        g.map(0x1000, RAM, Size::Page4K, Attrs::normal_rwx())
            .unwrap();
        g.map(0x0020_0000, RAM + MB2, Size::Block2M, Attrs::normal_rwx())
            .unwrap();
        g.map(0x2000, 0x0900_0000, Size::Page4K, Attrs::device_rw())
            .unwrap();
        assert_eq!(memattr(0x1000, 3), 0b0110);
        assert_eq!(memattr(0x0020_0000, 2), 0b0110);
        assert_eq!(memattr(0x2000, 3), 0b0001);
        assert_eq!(g.translate(0x1000).unwrap().attrs, Attrs::normal_rwx());
        assert_eq!(g.translate(0x0020_1000).unwrap().attrs, Attrs::normal_rwx());
        assert_eq!(g.translate(0x2000).unwrap().attrs, Attrs::device_rw());
    }
    {
        let g = s2.exclusive(0);
        g.write_protect(0, 0x0040_0000).unwrap();
        assert_eq!(memattr(0x1000, 3), 0b0110);
        assert_eq!(memattr(0x0020_0000, 2), 0b0110);
        assert_eq!(g.translate(0x1000).unwrap().attrs, Attrs::normal(Perms::RX));
    }
    {
        let g = s2.shared(0);
        g.relax_perms(0x1000, Perms::W).unwrap();
        assert_eq!(memattr(0x1000, 3), 0b0110);
        assert_eq!(g.translate(0x1000).unwrap().attrs, Attrs::normal_rwx());
    }
    finish(s2, &pool);
}

#[test]
fn clear_young_each_reports_every_young_leaf_and_flushes_only_when_asked() {
    let (s2, pool, tlb) = setup(64);
    {
        let g = s2.shared(0);
        // Three young 4 KiB pages and one young 2 MiB block.
        map_pages(&g, 3);
        g.map(2 * MB2, RAM + MB2, Size::Block2M, Attrs::normal_rwx())
            .unwrap();
        tlb.take();
        let mut spans = Vec::new();
        let aged = g.clear_young_each(MB2, 3 * MB2, false, |span| spans.push(span));
        spans.sort_unstable();
        assert_eq!(
            spans,
            vec![
                (MB2, 0x1000),
                (MB2 + 0x1000, 0x1000),
                (MB2 + 0x2000, 0x1000),
                (2 * MB2, MB2)
            ]
        );
        assert_eq!((aged.young, aged.young_pages), (4, 3 + 512));
        assert!(tlb.take().is_empty(), "no invalidation without flush");
        // Now all old: nothing reported; with flush and nothing cleared, still no invalidation.
        let mut n = 0;
        let aged = g.clear_young_each(MB2, 3 * MB2, true, |_| n += 1);
        assert_eq!((aged.young, n), (0, 0));
        assert!(tlb.take().is_empty());
        // One page young again (the Access flag fault path): reported, one invalidation.
        g.mark_young(MB2 + 0x1000).unwrap();
        let mut spans = Vec::new();
        g.clear_young_each(MB2, 3 * MB2, true, |span| spans.push(span));
        assert_eq!(spans, vec![(MB2 + 0x1000, 0x1000)]);
        let ops = tlb.take();
        assert!(
            matches!(ops.as_slice(), [TlbOp::Leaves { ipa, size }] if *ipa == MB2 + 0x1000 && *size == 0x1000),
            "{ops:?}"
        );
    }
    s2.reclaim(0);
    finish(s2, &pool);
}
