//! Attaching: XDP to the interface, the socket-lookup program to the
//! network namespace with the proxy's sockets in its map, both as pinned
//! links a later daemon adopts; holding, repairing and detaching them.
use std::{os::fd::AsFd, path::Path};

use aya::{
    Ebpf,
    maps::{MapData, SockMap},
    programs::{ProgramError, SkLookup, Xdp, XdpMode, links::FdLink},
};
use gateway_common::{PROXY_SOCKET_SLOTS, map_names};

use super::{
    AttachMode, Attachment, Dataplane, DataplaneError, PROGRAM_NAME, Repair, STEER_PROGRAM_NAME,
    map, pins,
};

impl Dataplane {
    /// Puts the proxy's listening sockets in their `PROXY_SOCKETS` slots
    /// (`gateway_common::proxy_socket_slot`), where the socket-lookup
    /// program hands listener connections; slots with no socket (no IPv6
    /// on the host) are cleared, so their connections are refused.
    pub fn set_proxy_sockets(
        &mut self,
        sockets: &[(u32, std::os::fd::BorrowedFd<'_>)],
    ) -> Result<(), DataplaneError> {
        let mut map: SockMap<&mut MapData> = map(&mut self.ebpf, map_names::PROXY_SOCKETS)?;
        let error = |source| DataplaneError::Map {
            name: map_names::PROXY_SOCKETS,
            source,
        };
        for slot in 0..PROXY_SOCKET_SLOTS {
            match sockets.iter().find(|(s, _)| *s == slot) {
                Some((_, fd)) => map.set(slot, fd, 0).map_err(error)?,
                None => match map.clear_index(&slot) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(source) => return Err(error(source)),
                },
            }
        }
        Ok(())
    }

    /// The socket-lookup program, for `BPF_PROG_TEST_RUN` in tests.
    pub fn steering_program(&self) -> Result<&SkLookup, DataplaneError> {
        self.ebpf
            .program(STEER_PROGRAM_NAME)
            .ok_or(DataplaneError::MissingProgram {
                name: STEER_PROGRAM_NAME,
            })?
            .try_into()
            .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })
    }

    /// Attaches the socket-lookup program to this process's network
    /// namespace: from then on every connection to a listener's (address,
    /// port) reaches the proxy's sockets, whatever ports they are bound
    /// to. The link lives as long as the `Dataplane`.
    pub fn attach_steering(&mut self) -> Result<(), DataplaneError> {
        let netns = std::fs::File::open("/proc/self/ns/net").map_err(|source| {
            DataplaneError::AttachSteering {
                source: Box::new(source),
            }
        })?;
        if let Some(dir) = self.pins.clone() {
            let path = dir.join(pins::STEER_LINK);
            let program = steering_program(&mut self.ebpf)?;
            if adopt_link(
                &path,
                program.fd().map_err(link_error("sk_lookup"))?.as_fd(),
            )? {
                return Ok(());
            }
            return self.attach_steering_pinned(netns, &path);
        }
        steering_program(&mut self.ebpf)?
            .attach(netns)
            .map_err(|source| DataplaneError::AttachSteering {
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Attaches the socket-lookup program to `netns` with a new link
    /// pinned at `path`.
    fn attach_steering_pinned(
        &mut self,
        netns: std::fs::File,
        path: &Path,
    ) -> Result<(), DataplaneError> {
        let program = steering_program(&mut self.ebpf)?;
        let link_id = program
            .attach(netns)
            .map_err(|source| DataplaneError::AttachSteering {
                source: Box::new(source),
            })?;
        let link = program
            .take_link(link_id)
            .map_err(link_error("sk_lookup"))?;
        FdLink::from(link)
            .pin(path)
            .map_err(link_error("sk_lookup"))?;
        Ok(())
    }

    /// Attaches the program to `interface`. Fails if any XDP program is
    /// already attached there (another instance, or a stale attachment),
    /// except, in pinned mode, the link a previous daemon pinned, whose
    /// program is replaced with this one atomically.
    pub fn attach(&mut self, interface: &str, mode: AttachMode) -> Result<(), DataplaneError> {
        let xdp_mode = match mode {
            AttachMode::Auto => XdpMode::Default,
            AttachMode::Native => XdpMode::Driver,
            AttachMode::Generic => XdpMode::Skb,
        };
        self.xdp_mode = xdp_mode;
        if let Some(dir) = self.pins.clone() {
            let path = dir.join(pins::XDP_LINK);
            let program = xdp_program(&mut self.ebpf)?;
            if !adopt_link(&path, program.fd().map_err(link_error("XDP"))?.as_fd())? {
                self.attach_xdp_pinned(interface, &path)?;
            }
            self.pinned_interface = Some(interface.to_string());
            return Ok(());
        }
        let link = xdp_program(&mut self.ebpf)?
            .attach(interface, xdp_mode)
            .map_err(|source| DataplaneError::from_attach(interface, source))?;
        self.attached = Some(Attachment {
            interface: interface.to_string(),
            link,
        });
        Ok(())
    }

    /// Attaches XDP to `interface` with a new link pinned at `path`.
    fn attach_xdp_pinned(&mut self, interface: &str, path: &Path) -> Result<(), DataplaneError> {
        let program = xdp_program(&mut self.ebpf)?;
        let link_id = program
            .attach(interface, self.xdp_mode)
            .map_err(|source| DataplaneError::from_attach(interface, source))?;
        let link = program.take_link(link_id).map_err(link_error("XDP"))?;
        let link = FdLink::try_from(link).map_err(link_error("XDP"))?;
        link.pin(path).map_err(link_error("XDP"))?;
        Ok(())
    }

    /// In pinned mode, once attached: holds a descriptor of every pinned
    /// map and link, so that the links stay attached (and [`Self::repair`]
    /// can pin them again) whatever happens to the pin directory.
    pub fn hold_pins(&mut self) -> Result<(), DataplaneError> {
        let (Some(dir), Some(interface)) = (&self.pins, &self.pinned_interface) else {
            return Ok(());
        };
        let held = pins::HeldPins::hold(interface, dir).map_err(|source| DataplaneError::Pins {
            path: dir.clone(),
            source,
        })?;
        self.held = Some(held);
        Ok(())
    }

    /// Puts back what was taken from under the daemon: a link detached
    /// from outside is attached again (a new link, pinned in its place),
    /// and pins removed from the bpffs are pinned again. Cheap enough to
    /// run every second: one `stat` of the pin directory's entries and
    /// one info query per link.
    pub fn repair(&mut self) -> Result<Repair, DataplaneError> {
        let mut repair = Repair::default();
        let (Some(held), Some(interface)) = (&self.held, self.pinned_interface.clone()) else {
            return Ok(repair);
        };
        let attached = |name: &str| {
            held.get(name)
                .is_none_or(|fd| pins::link_attached(fd).unwrap_or(true))
        };
        let xdp_lost = !attached(pins::XDP_LINK);
        let steering_lost = !attached(pins::STEER_LINK);
        if xdp_lost || steering_lost {
            let dir = pins::pin_dir(&interface)?;
            if xdp_lost {
                self.reattach(&dir, pins::XDP_LINK, |dataplane, path| {
                    dataplane.attach_xdp_pinned(&interface, path)
                })?;
                repair.reattached.push("XDP");
            }
            if steering_lost {
                self.reattach(&dir, pins::STEER_LINK, |dataplane, path| {
                    let netns = std::fs::File::open("/proc/self/ns/net").map_err(|source| {
                        DataplaneError::AttachSteering {
                            source: Box::new(source),
                        }
                    })?;
                    dataplane.attach_steering_pinned(netns, path)
                })?;
                repair.reattached.push("sk_lookup");
            }
        }
        if let Some(held) = &self.held {
            repair.pins_restored = held.restore()?;
        }
        Ok(repair)
    }

    /// Replaces the defunct link pinned as `link` in `dir`: `attach` makes
    /// a new one pinned at its path, which the daemon then holds.
    fn reattach(
        &mut self,
        dir: &Path,
        link: &str,
        attach: impl FnOnce(&mut Self, &Path) -> Result<(), DataplaneError>,
    ) -> Result<(), DataplaneError> {
        let path = dir.join(link);
        let _ = std::fs::remove_file(&path);
        attach(self, &path)?;
        let fd = pins::object_get(&path).map_err(|source| DataplaneError::Pins {
            path: path.clone(),
            source,
        })?;
        if let Some(held) = self.held.as_mut() {
            held.replace(link, fd);
        }
        Ok(())
    }

    /// Detaches from the interface; dropping a process-owned `Dataplane`
    /// does the same. In pinned mode, `keep_attached` leaves the links and
    /// maps pinned (XDP keeps filtering; with no proxy socket, listener
    /// connections are refused); otherwise links and pins are removed.
    pub fn detach(&mut self, keep_attached: bool) -> Result<Option<String>, DataplaneError> {
        // Without the descriptors, the pins are all that holds the links.
        self.held = None;
        if let Some(dir) = &self.pins {
            if keep_attached {
                return Ok(None);
            }
            pins::remove_pins(dir, true);
            return Ok(self.pinned_interface.take());
        }
        let Some(attachment) = self.attached.take() else {
            return Ok(None);
        };
        let program = xdp_program(&mut self.ebpf)?;
        program
            .detach(attachment.link)
            .map_err(|source| DataplaneError::Detach { source })?;
        Ok(Some(attachment.interface))
    }
}

/// Points the link pinned at `path`, if there is one, at `program`;
/// returns whether there was one.
fn adopt_link(path: &Path, program: std::os::fd::BorrowedFd<'_>) -> Result<bool, DataplaneError> {
    if !path.exists() {
        return Ok(false);
    }
    let link = pins::object_get(path).map_err(|source| DataplaneError::Pins {
        path: path.to_path_buf(),
        source,
    })?;
    pins::link_update(link.as_fd(), program).map_err(|source| DataplaneError::Pins {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(true)
}

fn link_error<E: std::error::Error + Send + Sync + 'static>(
    what: &'static str,
) -> impl Fn(E) -> DataplaneError {
    move |source| DataplaneError::Link {
        what,
        source: Box::new(source),
    }
}

pub(super) fn steering_program(ebpf: &mut Ebpf) -> Result<&mut SkLookup, DataplaneError> {
    ebpf.program_mut(STEER_PROGRAM_NAME)
        .ok_or(DataplaneError::MissingProgram {
            name: STEER_PROGRAM_NAME,
        })?
        .try_into()
        .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })
}

pub(super) fn xdp_program(ebpf: &mut Ebpf) -> Result<&mut Xdp, DataplaneError> {
    ebpf.program_mut(PROGRAM_NAME)
        .ok_or(DataplaneError::MissingProgram { name: PROGRAM_NAME })?
        .try_into()
        .map_err(|source: ProgramError| DataplaneError::WrongProgramType { source })
}
