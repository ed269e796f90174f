//! The schedule driven directly: inputs and the time by hand, the
//! decisions read back.

use std::time::Duration;

use super::backoff::Backoff;
use super::kind::SyncErrorKind;
use super::schedule::{Input, Next, PassEnd, PassPlan, Schedule, ScheduleConfig};
use crate::id::WorkspaceId;

fn ws(n: u8) -> WorkspaceId {
    WorkspaceId::from_random([n; 16])
}

/// The engine's defaults: 30 s interval, 5 min while live, 250 ms commit
/// debounce, 10 ms nudge debounce, no pass at the start (the tests say
/// when they want one).
fn cfg() -> ScheduleConfig {
    ScheduleConfig {
        interval: Some(30_000),
        live_interval: Some(300_000),
        debounce: 250,
        nudge_debounce: 10,
        sync_on_start: false,
        workspaces: vec![ws(1)],
        backoff: Backoff::new(Duration::from_millis(1_000), Duration::from_secs(60)),
        seed: 7,
    }
}

fn ok() -> PassEnd {
    PassEnd::Ok {
        not_a_member: Vec::new(),
    }
}

fn offline() -> PassEnd {
    PassEnd::Failed(SyncErrorKind::Offline)
}

/// The pass `poll` asks for at `now` (fails the test otherwise).
#[track_caller]
fn pass_at(s: &mut Schedule, now: u64) -> PassPlan {
    match s.poll(now) {
        Next::Pass(p) => p,
        other => panic!("at {now} ms: expected a pass, got {other:?}"),
    }
}

/// The deadline `poll` waits for at `now` (fails the test on a pass).
#[track_caller]
fn wait_at(s: &mut Schedule, now: u64) -> Option<u64> {
    match s.poll(now) {
        Next::Wait { until } => until,
        other => panic!("at {now} ms: expected to wait, got {other:?}"),
    }
}

/// Runs the schedule from `from` to `to` ms: at every deadline it names, a
/// pass it asks for succeeds at once. Returns the start times of the passes.
fn run(s: &mut Schedule, from: u64, to: u64) -> Vec<u64> {
    let mut now = from;
    let mut passes = Vec::new();
    loop {
        match s.poll(now) {
            Next::Pass(_) => {
                passes.push(now);
                s.finished(now, ok());
            }
            Next::Wait { until: Some(t) } if t <= to => now = t,
            Next::Wait { .. } => return passes,
            Next::Stop => panic!("stopped at {now}"),
        }
    }
}

#[test]
fn a_burst_of_commits_is_one_pass_after_the_debounce_of_the_first() {
    let mut s = Schedule::new(cfg(), 0);
    for t in [0, 40, 120, 200, 249] {
        s.handle(t, Input::LocalCommit);
        assert_eq!(wait_at(&mut s, t), Some(250), "the window opened at 0");
    }
    pass_at(&mut s, 250);
    s.finished(260, ok());
    // Nothing else until the periodic tick.
    assert_eq!(wait_at(&mut s, 260), Some(30_000));
    assert_eq!(run(&mut s, 260, 29_999), Vec::<u64>::new());
}

#[test]
fn a_pass_covers_every_trigger_before_it_and_closes_the_windows() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::LocalCommit);
    s.handle(5, Input::Nudge);
    // The nudge window (10 ms) closes first: one pass covers the commit too.
    assert_eq!(wait_at(&mut s, 5), Some(15));
    pass_at(&mut s, 15);
    s.finished(100, ok());
    assert_eq!(
        wait_at(&mut s, 300),
        Some(30_000),
        "the commit window is closed"
    );
}

#[test]
fn triggers_during_a_pass_cause_exactly_one_follow_up_pass() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::SyncNow);
    assert_eq!(pass_at(&mut s, 0).answers, 1);
    // While it runs: nudges, commits, a caller; nothing starts meanwhile.
    for t in 1..20 {
        s.handle(t, Input::Nudge);
        s.handle(t, Input::LocalCommit);
        assert_eq!(s.poll(t), Next::Wait { until: None }, "one pass at a time");
    }
    s.handle(20, Input::SyncNow);
    s.handle(21, Input::SyncNow);
    s.finished(1_000, ok());
    // Both callers that came during the pass get the next one, at once.
    let plan = pass_at(&mut s, 1_000);
    assert_eq!(plan.answers, 2);
    s.finished(1_100, ok());
    // And that pass covered the nudges and commits: no third pass.
    assert_eq!(run(&mut s, 1_100, 29_999), Vec::<u64>::new());
}

#[test]
fn a_nudge_during_a_pass_waits_its_window_after_the_pass() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::Online);
    pass_at(&mut s, 0);
    s.handle(3, Input::Nudge);
    s.handle(4, Input::Nudge);
    s.finished(500, ok());
    // Held inputs apply at the end of the pass: the window runs from 500.
    assert_eq!(wait_at(&mut s, 500), Some(510));
    assert_eq!(run(&mut s, 500, 29_999), vec![510]);
}

#[test]
fn sync_now_bypasses_the_debounce_the_backoff_and_an_auth_pause() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::LocalCommit);
    s.handle(1, Input::SyncNow);
    s.handle(2, Input::SyncNow);
    let plan = pass_at(&mut s, 2);
    assert_eq!(plan.answers, 2, "both callers are answered by one pass");
    // Backing off after a failure: a caller still gets a pass at once.
    s.finished(10, offline());
    assert!(wait_at(&mut s, 10).is_some_and(|t| t > 10));
    s.handle(11, Input::SyncNow);
    assert_eq!(pass_at(&mut s, 11).answers, 1);
    // Paused for credentials: likewise.
    s.finished(20, PassEnd::Failed(SyncErrorKind::Auth));
    s.handle(21, Input::SyncNow);
    assert_eq!(pass_at(&mut s, 21).answers, 1);
}

#[test]
fn backoff_grows_and_a_success_resets_it() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::Online);
    let mut now = 0;
    let mut delays = Vec::new();
    for _ in 0..7 {
        pass_at(&mut s, now);
        let after = s.finished(now, offline());
        let delay = after.retry_in.expect("a failure backs off");
        delays.push(delay);
        let retry = now + delay.as_millis() as u64;
        // No pass before the delay ends: periodic ticks meanwhile wait too.
        let mut t = now;
        loop {
            match wait_at(&mut s, t) {
                Some(u) if u < retry => t = u,
                until => {
                    assert_eq!(until, Some(retry));
                    break;
                }
            }
        }
        now = retry;
    }
    // Equal jitter: each delay within [ceiling/2, ceiling], the ceiling
    // doubling from 1 s up to 60 s.
    for (i, d) in delays.iter().enumerate() {
        let ceiling = Duration::from_millis(1_000 << i).min(Duration::from_secs(60));
        assert!(
            *d >= ceiling / 2 && *d <= ceiling,
            "{i}: {d:?} vs {ceiling:?}"
        );
    }
    assert!(delays[6] >= Duration::from_secs(30), "{delays:?}");
    // A success resets it: the next failure waits at most the base again.
    pass_at(&mut s, now);
    s.finished(now, ok());
    s.handle(now, Input::Online);
    pass_at(&mut s, now);
    let after = s.finished(now, offline());
    assert!(after.retry_in.expect("backs off") <= Duration::from_millis(1_000));
}

#[test]
fn the_jitter_is_replayed_by_its_seed() {
    let delays = |seed| {
        let mut s = Schedule::new(ScheduleConfig { seed, ..cfg() }, 0);
        (0..5)
            .map(|i| {
                s.handle(i, Input::Online);
                pass_at(&mut s, i);
                s.finished(i, offline()).retry_in
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(delays(1), delays(1));
    assert_ne!(delays(1), delays(2));
}

#[test]
fn online_and_join_cancel_the_backoff() {
    for input in [Input::Online, Input::Join(ws(9))] {
        let mut s = Schedule::new(cfg(), 0);
        s.handle(0, Input::SyncNow);
        pass_at(&mut s, 0);
        s.finished(0, offline());
        assert!(wait_at(&mut s, 1).is_some_and(|t| t >= 500));
        s.handle(1, input.clone());
        pass_at(&mut s, 1);
    }
}

#[test]
fn the_periodic_interval_and_the_live_interval() {
    let mut s = Schedule::new(cfg(), 0);
    assert_eq!(run(&mut s, 0, 95_000), vec![30_000, 60_000, 90_000]);
    // Live updates flow: the next ticks use the long fallback interval
    // (the tick already set stays).
    s.handle(95_000, Input::Live(true));
    assert_eq!(run(&mut s, 95_000, 500_000), vec![120_000, 420_000]);
    // They stop flowing: the next tick comes within the interval.
    s.handle(430_000, Input::Live(false));
    assert_eq!(wait_at(&mut s, 430_000), Some(460_000));
    assert_eq!(run(&mut s, 430_000, 515_000), vec![460_000, 490_000]);
    // No interval: nothing but triggers.
    let mut quiet = Schedule::new(
        ScheduleConfig {
            interval: None,
            ..cfg()
        },
        0,
    );
    assert_eq!(wait_at(&mut quiet, 0), None);
}

#[test]
fn sync_on_start_runs_a_pass_at_once() {
    let mut s = Schedule::new(
        ScheduleConfig {
            sync_on_start: true,
            ..cfg()
        },
        0,
    );
    assert_eq!(pass_at(&mut s, 0).answers, 0);
    let mut without = Schedule::new(cfg(), 0);
    assert_eq!(wait_at(&mut without, 0), Some(30_000));
}

#[test]
fn join_adds_the_workspace_to_every_pass_and_starts_one() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(5, Input::Join(ws(2)));
    s.handle(6, Input::Join(ws(2)));
    let plan = pass_at(&mut s, 6);
    assert_eq!(plan.workspaces, vec![ws(1), ws(2)]);
    let after = s.finished(7, ok());
    assert_eq!(after.follow, Some((vec![ws(1), ws(2)], Vec::new())));
    // Later passes keep it.
    s.handle(8, Input::SyncNow);
    assert_eq!(pass_at(&mut s, 8).workspaces, vec![ws(1), ws(2)]);
}

#[test]
fn a_workspace_the_user_left_is_dropped_from_the_live_updates() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::SyncNow);
    pass_at(&mut s, 0);
    let after = s.finished(
        1,
        PassEnd::Ok {
            not_a_member: vec![ws(1)],
        },
    );
    assert_eq!(after.follow, Some((vec![ws(1)], vec![ws(1)])));
    assert_eq!(after.retry_in, None);
}

#[test]
fn an_auth_failure_waits_for_credentials() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::SyncNow);
    pass_at(&mut s, 0);
    let after = s.finished(0, PassEnd::Failed(SyncErrorKind::Auth));
    assert_eq!(after.retry_in, None, "no backoff: nothing would change");
    // Commits, nudges, ticks and "online" start nothing.
    s.handle(1, Input::LocalCommit);
    s.handle(2, Input::Nudge);
    s.handle(3, Input::Online);
    assert_eq!(run(&mut s, 3, 100_000), Vec::<u64>::new());
    s.handle(100_000, Input::CredentialsUpdated);
    pass_at(&mut s, 100_000);
}

#[test]
fn shutdown_stops_at_once_or_after_the_running_pass() {
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::SyncNow);
    s.handle(0, Input::Shutdown);
    assert_eq!(s.poll(0), Next::Stop, "the waiting caller is not served");
    let mut s = Schedule::new(cfg(), 0);
    s.handle(0, Input::SyncNow);
    pass_at(&mut s, 0);
    s.handle(1, Input::Shutdown);
    assert_eq!(s.poll(1), Next::Wait { until: None }, "the pass ends first");
    s.finished(2, ok());
    assert_eq!(s.poll(2), Next::Stop);
}
