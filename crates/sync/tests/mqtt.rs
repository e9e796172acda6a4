//! The control plane against a real mosquitto with the dynamic-security plugin: the hub
//! provisions devices (`hub::MosquittoDynsec`), each device runs `sync::MqttSession`,
//! and the hub's own client (`hub::HubMqtt`) sends commands and hears the fleet. What is
//! proved: passwords and ACLs confine a device to its own topics, the retained status
//! and its last will, commands queued in a persistent session, revocation, and
//! `is_up` following the broker away and back (issue 16, point 5).

mod common;

use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use common::broker::Broker;
use hub::{BrokerAdmin, BrokerLogin, FleetEvent, HubMqtt, MosquittoDynsec};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use sync::{MqttHandle, MqttSession, MqttSettings, MqttTls};
use tokio::sync::mpsc;
use wire::DeviceId;
use wire::mqtt::{Presence, Telemetry, Topic};
use wire::v1::{AckResult, Command, CommandAck, CommandKind};

const WAIT: Duration = Duration::from_secs(5);

fn device(n: u8) -> DeviceId {
    DeviceId::new(1_700_000_000_000 + n as u64, [n; 16])
}

fn password(device: DeviceId) -> String {
    format!("pw-{device}")
}

/// The broker, with the hub user and devices provisioned.
fn provisioned(broker: &Broker, devices: &[DeviceId]) -> MosquittoDynsec {
    let admin = MosquittoDynsec::connect(&broker.admin()).unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
    admin.provision_hub("hub", "hub-password").unwrap();
    for d in devices {
        admin.provision(*d, &password(*d)).unwrap();
    }
    admin
}

fn hub_client(broker: &Broker) -> (HubMqtt, std_mpsc::Receiver<FleetEvent>) {
    let (tx, rx) = std_mpsc::channel();
    let login =
        BrokerLogin { timeout: Duration::from_secs(3), ..BrokerLogin::new(broker.url(), "hub", "hub-password") };
    let hub = HubMqtt::connect(&login, move |event| {
        let _ = tx.send(event);
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", broker.log()));
    (hub, rx)
}

fn settings(url: &str, device: DeviceId, password: &str) -> MqttSettings {
    let mut settings = MqttSettings::new(url, device, password);
    settings.backoff_min = Duration::from_millis(50);
    settings.backoff_max = Duration::from_millis(400);
    settings.connect_timeout = Duration::from_secs(2);
    settings
}

fn telemetry() -> Telemetry {
    Telemetry { backlog_frames: 7, rss_bytes: 1 << 20, sent_at_ms: 1, ..Telemetry::default() }
}

fn session(url: &str, device: DeviceId, password: &str) -> (MqttHandle, mpsc::Receiver<Command>) {
    let (tx, rx) = mpsc::channel(8);
    (MqttSession::spawn(settings(url, device, password), telemetry, tx).unwrap(), rx)
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The first event `pick` takes, within [`WAIT`].
fn next_event<T>(events: &std_mpsc::Receiver<FleetEvent>, mut pick: impl FnMut(FleetEvent) -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.checked_duration_since(Instant::now())?;
        if let Some(found) = pick(events.recv_timeout(left).ok()?) {
            return Some(found);
        }
    }
}

fn command(id: &str) -> Command {
    Command { id: id.into(), kind: CommandKind::SyncNow, frames: Vec::new(), window: None, created_ms: 1 }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioned_devices_log_in_with_their_own_password_only() {
    let broker = Broker::start();
    let (a, b) = (device(1), device(2));
    let admin = tokio::task::block_in_place(|| provisioned(&broker, &[a, b]));

    let (good, _commands) = session(&broker.url(), a, &password(a));
    until("A is up with its own password", || good.is_up()).await;

    let (borrowed, _c1) = session(&broker.url(), a, &password(b));
    let (wrong, _c2) = session(&broker.url(), a, "guess");
    let (unknown, _c3) = session(&broker.url(), device(3), &password(device(3)));
    until("all are refused", || [&borrowed, &wrong, &unknown].iter().all(|s| s.last_error().is_some())).await;
    for refused in [&borrowed, &wrong, &unknown] {
        assert!(!refused.is_up());
        let why = refused.last_error().unwrap();
        assert!(why.contains("not authorised") && why.contains("obscura hub devices approve"), "{why}");
    }
    assert!(good.is_up(), "a refused login for A's id does not take A's session");
    good.shutdown(Duration::from_secs(2)).await;

    // Approved again with a new password: the old one is refused, the new one works.
    tokio::task::block_in_place(|| admin.provision(a, "a-new-password")).unwrap();
    let (old, _c4) = session(&broker.url(), a, &password(a));
    until("the old password is refused", || old.last_error().is_some()).await;
    drop(old);
    let (new, _c5) = session(&broker.url(), a, "a-new-password");
    until("the new password works", || new.is_up()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_cannot_subscribe_to_or_publish_as_another() {
    let broker = Broker::start();
    let (a, b) = (device(1), device(2));
    let _admin = tokio::task::block_in_place(|| provisioned(&broker, &[a, b]));
    let (hub, events) = tokio::task::block_in_place(|| hub_client(&broker));

    // A, as a raw client that tries what sync never would.
    let mut options = MqttOptions::new(a.to_string(), "127.0.0.1", broker.port);
    options.set_credentials(a.to_string(), password(a));
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    client.subscribe(wire::mqtt::commands_filter(b), QoS::AtLeastOnce).await.unwrap();
    client.subscribe(Topic::Command("x".into()).name(b), QoS::AtLeastOnce).await.unwrap();
    client.subscribe(wire::mqtt::commands_filter(a), QoS::AtLeastOnce).await.unwrap();
    let mut codes = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while codes.len() < 3 {
        let event = tokio::time::timeout_at(deadline, eventloop.poll()).await.expect("three SubAcks").unwrap();
        if let Event::Incoming(Packet::SubAck(ack)) = event {
            codes.extend(ack.return_codes);
        }
    }
    assert_eq!(codes[0], SubscribeReasonCode::Failure, "B's commands (0x80)");
    assert_eq!(codes[1], SubscribeReasonCode::Failure, "one of B's commands (0x80)");
    assert_eq!(codes[2], SubscribeReasonCode::Success(QoS::AtLeastOnce), "its own");

    // A command for B does not reach A; one for A does.
    tokio::task::block_in_place(|| hub.publish_command(b, &command("for-b")).unwrap());
    tokio::task::block_in_place(|| hub.publish_command(a, &command("for-a")).unwrap());
    let ack = CommandAck { result: AckResult::Done, message: None, receipt: None };
    let ack_json = serde_json::to_vec(&ack).unwrap();
    // A publishes as B: a status and an ack on B's topics, then its own ack.
    client.publish(Topic::Status.name(b), QoS::AtLeastOnce, true, br#"{"state":"online"}"#.to_vec()).await.unwrap();
    client.publish(Topic::Ack("for-b".into()).name(b), QoS::AtLeastOnce, false, ack_json.clone()).await.unwrap();
    let mut received = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !received.iter().any(|t: &String| t.ends_with("/for-a")) {
        let event = tokio::time::timeout_at(deadline, eventloop.poll()).await.expect("A's own command").unwrap();
        if let Event::Incoming(Packet::Publish(p)) = event {
            received.push(p.topic);
        }
    }
    assert_eq!(received, vec![Topic::Command("for-a".into()).name(a)], "nothing of B's reaches A");
    client.publish(Topic::Ack("for-a".into()).name(a), QoS::AtLeastOnce, false, ack_json).await.unwrap();
    for _ in 0..4 {
        let _ = tokio::time::timeout(Duration::from_millis(200), eventloop.poll()).await;
    }

    // The hub hears A's own ack, and nothing A said as B.
    let heard: Vec<FleetEvent> = tokio::task::block_in_place(|| {
        let first = next_event(&events, |e| matches!(&e, FleetEvent::Ack { device, .. } if *device == a).then_some(e));
        first.into_iter().chain(events.try_iter()).collect()
    });
    assert!(matches!(&heard[0], FleetEvent::Ack { command, .. } if command == "for-a"), "{heard:?}");
    let as_b: Vec<_> = heard
        .iter()
        .filter(|e| matches!(e, FleetEvent::Ack { device, .. } | FleetEvent::Status { device, .. } if *device == b))
        .collect();
    assert!(as_b.is_empty(), "A published as B: {as_b:?}");
}

#[test]
fn the_retained_status_is_online_and_the_will_says_offline_when_the_connection_dies() {
    let broker = Broker::start();
    let a = device(1);
    let _admin = provisioned(&broker, &[a]);
    let (_hub, events) = hub_client(&broker);

    // The device on a runtime of its own, so that dropping it is a crash: no DISCONNECT.
    let device_runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let url = broker.url();
    let (handle, _commands) = device_runtime.block_on(async move { session(&url, a, &password(a)) });
    let status = |wanted: Presence| {
        move |e: FleetEvent| match e {
            FleetEvent::Status { device, status } if device == a && status.state == wanted => Some(status),
            _ => None,
        }
    };
    let online = next_event(&events, status(Presence::Online)).expect("online");
    assert!(online.at_ms.is_some());
    let sent = next_event(&events, |e| match e {
        FleetEvent::Telemetry { device, telemetry } if device == a => Some(telemetry),
        _ => None,
    });
    assert_eq!(sent.expect("telemetry at connect").backlog_frames, 7);

    // A newcomer sees the retained online status at once.
    let (_late, late_events) = hub_client(&broker);
    assert!(next_event(&late_events, status(Presence::Online)).is_some(), "retained");

    device_runtime.shutdown_background(); // a crash: the connection ends with no DISCONNECT
    drop(handle);
    let will = next_event(&events, status(Presence::Offline)).expect("the last will");
    assert_eq!(will.at_ms, None, "the will, not a goodbye");
    let (_later, later_events) = hub_client(&broker);
    assert!(next_event(&later_events, status(Presence::Offline)).is_some(), "retained");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_sent_while_the_device_is_offline_arrives_when_it_reconnects_and_its_ack_reaches_the_hub() {
    let broker = Broker::start();
    let a = device(1);
    let _admin = tokio::task::block_in_place(|| provisioned(&broker, &[a]));
    let (hub, events) = tokio::task::block_in_place(|| hub_client(&broker));

    let (handle, _commands) = session(&broker.url(), a, &password(a));
    until("A is up", || handle.is_up()).await;
    handle.shutdown(Duration::from_secs(2)).await;
    let goodbye = tokio::task::block_in_place(|| {
        next_event(&events, |e| match e {
            FleetEvent::Status { device, status } if device == a && status.state == Presence::Offline => Some(status),
            _ => None,
        })
    });
    assert!(goodbye.expect("the goodbye").at_ms.is_some(), "a clean shutdown says offline itself");

    tokio::task::block_in_place(|| hub.publish_command(a, &command("c-offline")).unwrap());
    std::thread::sleep(Duration::from_millis(200)); // the broker queues it in A's session

    let (handle, mut commands) = session(&broker.url(), a, &password(a));
    let got = tokio::time::timeout(WAIT, commands.recv()).await.expect("the queued command").unwrap();
    assert_eq!(got, command("c-offline"));
    let ack = CommandAck { result: AckResult::Done, message: Some("synced".into()), receipt: None };
    handle.publish_ack(&got.id, &ack).unwrap();
    let heard = tokio::task::block_in_place(|| {
        next_event(&events, |e| match e {
            FleetEvent::Ack { device, command, ack } if device == a => Some((command, ack)),
            _ => None,
        })
    });
    assert_eq!(heard, Some(("c-offline".to_owned(), ack)));
    handle.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_disconnected_and_cannot_reconnect() {
    let broker = Broker::start();
    let (a, b) = (device(1), device(2));
    let admin = tokio::task::block_in_place(|| provisioned(&broker, &[a, b]));
    let (handle, _commands) = session(&broker.url(), a, &password(a));
    let (other, _other_commands) = session(&broker.url(), b, &password(b));
    until("both are up", || handle.is_up() && other.is_up()).await;

    tokio::task::block_in_place(|| admin.revoke(a)).unwrap();
    until("A is kicked and refused", || handle.last_error().is_some_and(|e| e.contains("not authorised"))).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // several reconnect attempts
    assert!(!handle.is_up(), "{:?}", handle.last_error());
    assert!(other.is_up(), "revoking A leaves B alone");
    tokio::task::block_in_place(|| admin.revoke(a)).expect("revoking twice is done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_up_follows_the_broker_going_away_and_coming_back() {
    let mut broker = Broker::start();
    let a = device(1);
    let _admin = tokio::task::block_in_place(|| provisioned(&broker, &[a]));
    let (handle, _commands) = session(&broker.url(), a, &password(a));
    until("A is up", || handle.is_up()).await;

    broker.stop();
    until("A is down", || !handle.is_up()).await;
    let why = handle.last_error().unwrap();
    assert!(why.contains(&broker.url()), "{why}");
    let ack = CommandAck { result: AckResult::Failed, message: None, receipt: None };
    assert!(handle.publish_ack("c1", &ack).is_err(), "refused at once while down");

    broker.restart();
    until("A is up again", || handle.is_up()).await;
    assert_eq!(handle.last_error(), None);
    handle.publish_ack("c1", &ack).unwrap();
    handle.shutdown(Duration::from_secs(2)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtts_checks_the_brokers_certificate() {
    let broker = Broker::start_tls();
    let a = device(1);
    let _admin = tokio::task::block_in_place(|| provisioned(&broker, &[a]));

    let (tx, _commands) = mpsc::channel(8);
    let mut trusted = settings(&broker.tls_url(), a, &password(a));
    trusted.tls = Some(MqttTls::CaFile(broker.ca_file()));
    let handle = MqttSession::spawn(trusted, telemetry, tx.clone()).unwrap();
    until("A is up over TLS", || handle.is_up()).await;

    // Another CA (an impostor's broker, as far as the box knows) is refused.
    let other = Broker::start_tls();
    let mut untrusting = settings(&broker.tls_url(), a, &password(a));
    untrusting.tls = Some(MqttTls::CaFile(other.ca_file()));
    let refused = MqttSession::spawn(untrusting, telemetry, tx).unwrap();
    until("the untrusted certificate is refused", || refused.last_error().is_some()).await;
    let why = refused.last_error().unwrap();
    assert!(why.contains("TLS") && why.contains("certificate"), "{why}");
    assert!(!refused.is_up());
    handle.shutdown(Duration::from_secs(2)).await;
}

/// Issue 20, item 6: a device's message over `MAX_EVENT_BYTES` (retained, so every
/// reconnect hears it again) or not v1 is refused and counted, never handed on, and
/// the hub's client stays up and hears the next good one; one over the broker's
/// `max_packet_size` never reaches the hub. Before, the hub's client read at most
/// rumqttc's default 10 KiB, so an 11 KiB retained status dropped its connection at
/// every reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r20_6_an_oversized_or_malformed_device_message_is_refused_counted_and_the_hub_stays_up() {
    let broker = Broker::start();
    let a = device(1);
    let _admin = tokio::task::block_in_place(|| provisioned(&broker, &[a]));
    let (hub, events) = tokio::task::block_in_place(|| hub_client(&broker));

    let mut options = MqttOptions::new(a.to_string(), "127.0.0.1", broker.port);
    options.set_credentials(a.to_string(), password(a)).set_max_packet_size(4 << 20, 4 << 20);
    let (client, mut eventloop) = AsyncClient::new(options, 10);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    let big = format!(r#"{{"state":"online","pad":"{}"}}"#, "x".repeat(hub::MAX_EVENT_BYTES));
    client.publish(Topic::Status.name(a), QoS::AtLeastOnce, true, big.clone().into_bytes()).await.unwrap();
    client.publish(Topic::Telemetry.name(a), QoS::AtLeastOnce, false, b"not json".to_vec()).await.unwrap();
    client.publish(Topic::Ack("c1".into()).name(a), QoS::AtLeastOnce, false, b"{\"result\":7}".to_vec()).await.unwrap();
    until("both refusals are counted", || hub.refusals().oversized() == 1 && hub.refusals().malformed() == 2).await;
    assert!(hub.is_up());
    assert!(events.try_iter().next().is_none(), "nothing refused was handed on");

    // A later hub client gets the oversized retained status at once, refuses it, stays up.
    let (late, late_events) = tokio::task::block_in_place(|| hub_client(&broker));
    until("the retained status is refused", || late.refusals().oversized() == 1).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(late.is_up(), "a retained oversized status must not drop the hub's connection");
    assert!(late_events.try_iter().next().is_none());

    // Over the broker's max_packet_size: the broker drops the device, not the hub.
    let huge = vec![b'x'; hub::MAX_PACKET_BYTES + 1];
    client.publish(Topic::Telemetry.name(a), QoS::AtLeastOnce, false, huge).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(hub.is_up() && late.is_up());
    pump.abort();

    // The device again, well-behaved: heard.
    let (_session, _commands) = session(&broker.url(), a, &password(a));
    let online = tokio::task::block_in_place(|| {
        next_event(&events, |e| match e {
            FleetEvent::Status { device, status } if device == a => Some(status.state),
            _ => None,
        })
    });
    assert_eq!(online, Some(Presence::Online));
    assert_eq!((hub.refusals().oversized(), hub.refusals().malformed()), (1, 2), "nothing more refused");
}
