use super::*;

fn set(netns: u64, interface: &str) -> PinSet {
    PinSet {
        netns,
        interface: interface.to_string(),
    }
}

/// Namespace 100 with `eth0` and `veth1`; namespace 200 with `eth0`.
fn live() -> Live {
    Live {
        namespaces: BTreeMap::from([
            (
                100,
                Some(BTreeSet::from(["eth0".to_string(), "veth1".to_string()])),
            ),
            (200, Some(BTreeSet::from(["eth0".to_string()]))),
        ]),
        ..Live::default()
    }
}

#[test]
fn a_set_whose_namespace_is_gone_is_orphaned() {
    assert_eq!(judge(&set(300, "eth0"), &live()), Verdict::NamespaceGone);
}

#[test]
fn a_set_whose_interface_is_gone_from_a_live_namespace_is_orphaned() {
    assert_eq!(judge(&set(200, "veth1"), &live()), Verdict::InterfaceGone);
}

#[test]
fn a_killed_daemons_set_whose_interface_exists_is_kept_for_adoption() {
    assert_eq!(judge(&set(100, "veth1"), &live()), Verdict::InterfaceExists);
    assert_eq!(judge(&set(200, "eth0"), &live()), Verdict::InterfaceExists);
}

#[test]
fn a_set_a_running_daemon_names_is_kept_whatever_else_is_found() {
    let mut live = live();
    live.daemons.insert(set(300, "eth0"), 42);
    live.daemons.insert(set(200, "veth1"), 43);
    assert_eq!(
        judge(&set(300, "eth0"), &live),
        Verdict::HeldByDaemon { pid: 42 }
    );
    assert_eq!(
        judge(&set(200, "veth1"), &live),
        Verdict::HeldByDaemon { pid: 43 }
    );
}

#[test]
fn an_attached_xdp_link_keeps_a_set_whose_interface_was_renamed() {
    let mut live = live();
    live.xdp_attached.insert(set(200, "veth1"));
    assert_eq!(judge(&set(200, "veth1"), &live), Verdict::XdpAttached);
}

#[test]
fn an_attached_steering_link_keeps_a_set_whose_namespace_was_not_found() {
    let mut live = live();
    live.steering_attached.insert(set(300, "eth0"));
    assert_eq!(
        judge(&set(300, "eth0"), &live),
        Verdict::NamespaceUnreachable
    );
    // In a namespace that was found, the interface decides: steering
    // stays attached to a namespace whose interface is gone.
    live.steering_attached.insert(set(200, "veth1"));
    assert_eq!(judge(&set(200, "veth1"), &live), Verdict::InterfaceGone);
}

#[test]
fn a_namespace_that_cannot_be_entered_keeps_its_sets() {
    let mut live = live();
    live.namespaces.insert(400, None);
    assert_eq!(
        judge(&set(400, "eth0"), &live),
        Verdict::NamespaceUnreadable
    );
}

#[test]
fn only_a_gone_namespace_or_interface_is_orphaned() {
    let orphaned: Vec<bool> = [
        Verdict::HeldByDaemon { pid: 1 },
        Verdict::XdpAttached,
        Verdict::NamespaceUnreachable,
        Verdict::NamespaceUnreadable,
        Verdict::InterfaceExists,
        Verdict::NamespaceGone,
        Verdict::InterfaceGone,
    ]
    .iter()
    .map(Verdict::is_orphaned)
    .collect();
    assert_eq!(orphaned, [false, false, false, false, false, true, true]);
}

#[test]
fn pin_directory_names_are_namespace_inode_dash_interface() {
    assert_eq!(
        PinSet::from_dir_name("4026532303-gw24209x1"),
        Some(set(4026532303, "gw24209x1"))
    );
    // Interface names may hold dashes; the inode never does.
    assert_eq!(
        PinSet::from_dir_name("4026531833-veth-a-1"),
        Some(set(4026531833, "veth-a-1"))
    );
    assert_eq!(set(7, "veth-a-1").dir_name(), "7-veth-a-1");
    for other in [
        "maps.debug",
        "4026531833-",
        "-eth0",
        "x123-eth0",
        "+1-eth0",
        "eth0",
    ] {
        assert_eq!(PinSet::from_dir_name(other), None, "{other}");
    }
}

#[test]
fn namespace_mounts_are_read_from_mountinfo_escapes_undone() {
    let mountinfo = "\
24 30 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
512 29 0:4 net:[4026532303] /run/netns/gwt-1-gw rw shared:250 - nsfs nsfs rw
513 29 0:4 net:[4026532400] /run/my\\040netns/a\\134b rw - nsfs nsfs rw
514 29 0:4 mnt:[4026532500] /run/mntns/x rw - nsfs nsfs rw
515 29 0:50 / /run/gateway/bpf rw,relatime shared:260 - bpf bpf rw
";
    assert_eq!(
        net_namespace_mounts(mountinfo),
        vec![
            PathBuf::from("/run/netns/gwt-1-gw"),
            PathBuf::from("/run/my netns/a\\b")
        ]
    );
    assert_eq!(unescape_octal("a\\0x\\"), "a\\0x\\");
}
