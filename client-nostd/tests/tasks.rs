//! Task check-in and watchdog petting.

use std::cell::Cell;

use varta_client_nostd::{
    Agent, Kind, SharedTaskMonitor, StackError, Status, TaskError, TaskMonitor, TaskSpec,
};
use vlp_core::Frame;

const SPECS: [TaskSpec; 3] = [
    TaskSpec::new(100),
    TaskSpec::new(50).critical_after(200),
    TaskSpec::new(1000),
];

#[test]
fn all_on_time_is_ok_and_pets_the_watchdog() {
    let mut m = TaskMonitor::new(SPECS);
    let pets = Cell::new(0);
    for now in (10..=500).step_by(10) {
        for t in 0..3 {
            m.check_in(t, now).unwrap();
        }
        let h = m.poll(now + 5, || pets.set(pets.get() + 1));
        assert_eq!(h.status(), Status::Ok);
        assert_eq!(h.late_mask(), 0);
        assert_eq!(h.kind(), Kind::Beat(Status::Ok, 0));
    }
    assert_eq!(pets.get(), 50);
}

#[test]
fn late_task_degrades_names_itself_and_withholds_the_pet() {
    let mut m = TaskMonitor::new(SPECS);
    m.check_in(0, 90).unwrap();
    m.check_in(2, 90).unwrap();
    // Task 1 last counted at boot (tick 0): at 50 it is exactly on the edge, at 51 late.
    let pets = Cell::new(0);
    assert_eq!(m.poll(50, || pets.set(pets.get() + 1)).status(), Status::Ok);
    let h = m.poll(51, || pets.set(pets.get() + 1));
    assert_eq!(h.status(), Status::Degraded);
    assert_eq!(h.late_mask(), 0b010);
    assert_eq!(h.first_late(), Some(1));
    assert_eq!(pets.get(), 1, "no pet while a task is late");
    // Past its critical limit the beat turns Critical; task 0 now late too.
    let h = m.evaluate(201);
    assert_eq!(h.status(), Status::Critical);
    assert_eq!(h.late_mask(), 0b011);
    // Task 1 recovers: task 0 still late but no task is past a critical limit.
    m.check_in(1, 201).unwrap();
    let h = m.evaluate(201);
    assert_eq!((h.status(), h.late_mask()), (Status::Degraded, 0b001));
}

#[test]
fn check_in_from_the_future_and_out_of_order_stamps() {
    let mut m = TaskMonitor::new([TaskSpec::new(10)]);
    // An interrupt checked in at 120 after the loop read now = 100.
    m.check_in(0, 120).unwrap();
    assert!(m.evaluate(100).all_on_time());
    // A stale stamp never moves the check-in back.
    m.check_in(0, 50).unwrap();
    assert!(m.evaluate(125).all_on_time());
    assert_eq!(m.check_in(1, 0), Err(TaskError::UnknownTask));
}

#[test]
fn restart_resets_the_windows() {
    let mut m = TaskMonitor::new([TaskSpec::new(10), TaskSpec::new(10)]);
    assert_eq!(m.evaluate(1_000_000).late_mask(), 0b11);
    m.restart(1_000_000);
    assert!(m.evaluate(1_000_010).all_on_time());
}

static SHARED: SharedTaskMonitor<2> =
    SharedTaskMonitor::new([TaskSpec::new(10), TaskSpec::new(10)]);

#[test]
fn shared_monitor_from_threads_and_the_beat_payload() {
    // Threads stand in for interrupt handlers: check-ins go through critical-section.
    std::thread::scope(|s| {
        for t in 0..2 {
            s.spawn(move || {
                for now in 0..100 {
                    SHARED.check_in(t, now).unwrap();
                }
            });
        }
    });
    let pets = Cell::new(false);
    let h = SHARED.poll(105, || pets.set(true)).unwrap();
    assert!(pets.get() && h.all_on_time());
    SHARED.check_in(0, 200).unwrap();
    let h = SHARED.poll(205, || pets.set(false)).unwrap();
    assert!(pets.get(), "pet withheld");
    assert_eq!(h.late_mask(), 0b10);
    assert_eq!(SHARED.check_in(5, 0), Err(TaskError::UnknownTask));

    // The beat carries the verdict: Degraded, payload = late mask.
    let mut agent = Agent::plain(500);
    let mut out = Vec::new();
    let mut t = |d: &[u8]| -> Result<(), StackError> {
        out.push(d.to_vec());
        Ok(())
    };
    agent.try_send(&mut t, h.kind(), 205).unwrap();
    let f = Frame::parse(&out[0]).unwrap();
    assert_eq!((f.status(), f.payload()), (Status::Degraded, 0b10));
}
