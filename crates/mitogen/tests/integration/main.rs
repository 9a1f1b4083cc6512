//! Integration tests of the core against real processes: every context here is
//! this test executable started again in child mode, so `main` goes through
//! `mitogen::run` and runs the tests itself (see `harness`).
//!
//! Run with `cargo test -p mitogen --test integration [-- NAME]`.
//! `MITOGEN_TEST_LOG=1` echoes every event of the master to stderr.

mod async_api;
mod bad_input;
mod bare_host;
mod call_shape;
mod calls;
mod capture;
mod chains;
mod errors;
mod harness;
mod hooks;
mod hostile_switch;
mod hostile_tree;
mod leaks;
mod lifecycle;
mod logging;
mod netcut;
mod relay;
mod routing;
mod security;
mod sharing;
mod ssh;
mod ssh_arch;
mod sshd;
mod sshd_restart;
mod switch_user;
mod unix;
mod util;

use tracing_subscriber::prelude::*;

fn main() {
    let code = mitogen::run(|router| {
        if std::env::var_os(lifecycle::INTERMEDIATE_ENV).is_some() {
            return lifecycle::intermediate_main(&router);
        }
        if std::env::var_os(lifecycle::DETACH_ENV).is_some() {
            return lifecycle::detach_main(&router);
        }
        if std::env::var_os(leaks::CLEAN_MASTER_ENV).is_some() {
            return leaks::clean_master_main(&router);
        }
        if std::env::var_os(unix::CLIENT_ENV).is_some() {
            return unix::client_main();
        }
        if let Ok(scenario) = std::env::var(ssh::unreachable::NETNS_ENV) {
            return ssh::unreachable::netns_main(&router, &scenario);
        }
        if let Ok(scenario) = std::env::var(switch_user::SCENARIO_ENV) {
            return switch_user::inner_main(&router, &scenario);
        }
        // Children take their log level from the master's subscriber: debug
        // keeps the per-message trace events off while still forwarding logs.
        tracing_subscriber::registry()
            .with(capture::CaptureLayer::new())
            .with(tracing_subscriber::filter::LevelFilter::DEBUG)
            .init();
        let tests = [
            test!(calls::typed_call),
            test!(calls::call_async_blocking),
            test!(calls::call_async_awaited_under_tokio),
            test!(calls::call_no_reply_runs_in_order),
            test!(calls::call_timeout_then_context_still_works),
            test!(calls::many_pipelined_calls),
            test!(calls::call_chain_fails_after_first_error_and_resets),
            test!(calls::context_channel_streams_values),
            test!(calls::router_channel_streams_values),
            test!(calls::blob_bulk_chunks),
            test!(calls::select_over_two_receivers),
            test!(calls::select_over_pending_calls),
            test!(calls::calls_from_many_threads),
            test!(errors::io_error_comes_back),
            test!(errors::error_source_chain_comes_back),
            test!(errors::anyhow_context_chain_comes_back),
            test!(errors::panic_comes_back_with_message),
            test!(errors::unknown_function),
            test!(errors::arguments_that_do_not_decode),
            test!(errors::oversized_message_refused_at_sender),
            test!(errors::result_too_large),
            test!(logging::child_stdout_and_stderr_reach_master),
            test!(logging::subprocess_output_reaches_master),
            test!(logging::child_tracing_events_reach_master),
            test!(logging::failed_call_no_reply_is_logged),
            test!(logging::log_dir_gets_a_file_per_process),
            test!(lifecycle::shutdown_ends_process),
            test!(lifecycle::dropping_last_router_clone_shuts_children_down),
            test!(lifecycle::child_exits_when_parent_dies),
            test!(lifecycle::killed_child_fails_pending_call_at_once),
            test!(lifecycle::killed_child_ends_its_channels),
            test!(lifecycle::no_zombies_after_shutdowns),
            test!(lifecycle::calls_after_shutdown_fail_cleanly),
            test!(lifecycle::killing_first_hop_leaves_no_orphans),
            test!(lifecycle::killing_middle_hop_leaves_no_orphans),
            test!(lifecycle::killing_last_hop_leaves_no_orphans),
            test!(lifecycle::detached_child_outlives_master),
            test!(lifecycle::detached_child_exits_when_its_work_is_done),
            test!(bad_input::bad_magic),
            test!(bad_input::truncated_frame_then_eof),
            test!(bad_input::length_over_limit),
            test!(bad_input::message_to_unknown_handle),
            test!(bad_input::undecodable_channel_body),
            test!(bad_input::undecodable_log_record),
            test!(bad_input::spoofed_source_is_dropped),
            test!(routing::calls_through_chain),
            test!(routing::channels_through_chain),
            test!(routing::shutdown_through_chain),
            test!(routing::dropping_router_ends_whole_chain),
            test!(routing::connect_chain_returns_every_hop),
            test!(routing::two_chains_side_by_side),
            test!(relay::large_frames_through_a_chain_both_ways, 120),
            test!(relay::large_frames_through_an_ssh_hop, 120),
            test!(relay::source_dying_mid_frame_drops_only_that_frame),
            test!(relay::next_hop_dying_mid_frame_fails_only_that_call),
            test!(relay::stalled_source_is_given_up_and_buffered_after),
            test!(relay::slow_next_hop_is_not_a_stalled_source),
            test!(relay::dripping_source_is_given_up_too, 120),
            test!(hooks::route_and_disconnect_hooks_through_a_chain),
            test!(hooks::context_on_disconnect_fires_once_even_when_late),
            test!(hooks::shutdown_hook_fires_before_contexts_go),
            test!(unix::listener_serves_clients_of_the_same_user),
            test!(unix::client_calls_fail_when_the_master_goes),
            test!(unix::other_users_are_refused),
            test!(unix::listen_private_uses_a_private_directory),
            test!(unix::shared_or_planted_directories_are_refused),
            test!(unix::a_server_of_another_user_is_refused),
            test!(unix::silent_clients_do_not_hold_up_others),
            test!(unix::listen_private_uses_only_a_runtime_dir_of_its_own),
            test!(security::spoofed_source),
            test!(security::spoofed_auth_id),
            test!(security::call_into_parent),
            test!(security::call_into_sibling),
            test!(security::shutdown_of_sibling),
            test!(security::add_route_from_child),
            test!(security::del_route_from_child),
            test!(security::forged_reply_to_anothers_call),
            test!(security::oversized_frame),
            test!(security::flood, 120),
            test!(security::lateral_refused_by_default),
            test!(security::lateral_allowed_when_enabled),
            test!(leaks::connect_call_shutdown_cycles_leak_nothing, 300),
            test!(leaks::abnormal_endings_leak_nothing, 300),
            test!(ssh::cache::connects_as_root_and_as_a_user),
            test!(ssh::cache::second_connection_uploads_nothing, 180),
            test!(ssh::cache::corrupt_cache_entry_is_replaced, 180),
            test!(ssh::cache::read_only_or_noexec_home_falls_back, 180),
            test!(ssh::cache::two_connections_fill_an_empty_cache_at_once, 120),
            test!(ssh::cache::unused_builds_are_removed, 120),
            test!(ssh::failures::wrong_key_is_authentication_failed),
            test!(ssh::failures::closed_port_is_connection_refused),
            test!(ssh::password::password_login, 120),
            test!(ssh::password::wrong_password_is_authentication_failed),
            test!(ssh::password::no_password_is_password_required),
            test!(ssh::password::password_login_with_unknown_host_key),
            test!(ssh::unreachable::unreachable_host_in_an_empty_network_namespace),
            test!(ssh::failures::host_key_policies),
            test!(ssh::failures::login_shell_that_is_not_a_shell),
            test!(ssh::failures::banner_on_stdout_before_the_stage),
            test!(ssh::failures::remote_that_hangs_times_out),
            test!(ssh::failures::ssh_dying_or_stalling_mid_upload, 120),
            test!(ssh::calls::rtt_and_streaming),
            test!(ssh::calls::target_string_with_connect_options),
            test!(netcut::network_cut_fails_calls_and_leaves_no_orphans, 120),
            test!(
                sshd_restart::sshd_restart_fails_calls_and_leaves_no_orphans,
                120
            ),
            test!(ssh_arch::other_system_gets_its_build, 120),
            test!(ssh_arch::other_system_without_a_build_is_a_clear_error),
            test!(ssh_arch::cached_build_that_cannot_run_is_replaced, 180),
            test!(switch_user::sudo_with_password),
            test!(switch_user::sudo_wrong_password_fails_at_the_second_prompt),
            test!(switch_user::sudo_without_password_is_password_required),
            test!(switch_user::sudo_nopasswd),
            test!(switch_user::sudo_refused_by_policy),
            test!(switch_user::sudo_as_root_and_errors),
            test!(switch_user::su_as_root_needs_no_password),
            test!(switch_user::su_to_another_user_with_password),
            test!(switch_user::doas_with_and_without_nopass),
            test!(switch_user::doas_wrong_password),
            test!(chains::local_sudo_nopasswd),
            test!(chains::local_sudo_with_password),
            test!(chains::ssh_sudo_with_password, 180),
            test!(chains::ssh_sudo_su, 180),
            test!(chains::local_sudo_local),
            test!(chains::ssh_sudo_wrong_password, 120),
            test!(
                hostile_switch::replaced_build_asking_on_the_tty_gets_nothing,
                120
            ),
            test!(hostile_switch::command_reading_the_tty_does_not_hang, 120),
            test!(hostile_switch::su_target_gets_none_of_the_callers_environment),
            test!(
                hostile_switch::cached_build_saying_permission_denied_is_replaced,
                120
            ),
            test!(chains::per_hop_passwords, 120),
            test!(hostile_switch::sudo_prompt_is_secret_from_the_target),
            test!(ssh::password::password_login_from_a_target_string, 120),
            test!(sharing::intermediate_is_shared_and_goes_with_its_last_user),
            test!(sharing::concurrent_connects_start_one_intermediate),
            test!(sharing::dead_intermediate_is_replaced),
            test!(sharing::hop_connected_directly_stays_the_programs),
            test!(sharing::different_options_are_different_hops),
            test!(sharing::failed_later_hop_leaves_no_earlier_hop),
            test!(leaks::chain_cycles_leak_nothing, 300),
            test!(leaks::ssh_cycles_leak_nothing, 300),
            test!(leaks::timed_out_calls_leak_nothing, 120),
            test!(lifecycle::busy_remote_context_shutdown_says_it_did_not_exit),
            test!(hostile_tree::grandchild_cannot_answer_calls_to_its_parent),
            test!(hostile_tree::grandchild_cannot_send_to_channels_it_was_not_given),
            test!(hostile_tree::intermediate_cannot_forge_outside_its_subtree),
            test!(hostile_tree::stopped_intermediate_delays_only_its_subtree),
            test!(hostile_tree::receiver_that_falls_behind_is_closed_not_grown),
            test!(hostile_tree::message_size_limit_is_clamped_to_the_length_field),
            test!(hostile_tree::setuid_program_refuses_child_mode),
            test!(hostile_tree::forwarded_log_flood_is_cut),
            test!(hostile_tree::relay_does_not_echo_a_flood_back_to_a_child_that_does_not_read),
            test!(hostile_tree::relay_holds_a_child_back_while_its_parent_does_not_drain),
            test!(
                ssh::cache_trust::planted_fallback_directories_are_never_trusted,
                180
            ),
            test!(
                ssh::cache_trust::planted_files_in_the_victims_directory_never_run,
                180
            ),
            test!(ssh::cache_trust::home_with_a_space, 120),
            test!(
                hostile_tree::hop_password_never_reaches_a_sibling_subtree,
                120
            ),
            test!(leaks::gone_context_is_named_until_forgotten),
            test!(leaks::intermediate_forgets_grandchildren_that_are_gone),
            test!(call_shape::single_argument_without_a_tuple),
            test!(call_shape::default_call_timeout),
            test!(call_shape::context_start_and_connect_from_a_string),
            test!(call_shape::dropped_call_is_cancelled_in_the_callee),
            test!(call_shape::cancelled_queued_call_never_runs),
            test!(call_shape::timed_out_call_is_cancelled),
            test!(call_shape::grandchild_cannot_cancel_its_parents_calls),
            test!(call_shape::sibling_cannot_cancel_a_call),
            test!(call_shape::concurrent_calls_overlap),
            test!(call_shape::ordinary_calls_stay_in_order),
            test!(call_shape::concurrent_calls_beyond_the_pool_queue),
            test!(call_shape::another_ancestor_cannot_cancel_a_call),
            test!(async_api::dropping_local_senders_ends_the_receiver),
            test!(async_api::dropping_remote_senders_ends_the_receiver),
            test!(async_api::receiver_ends_when_the_holding_context_dies),
            test!(async_api::sender_passed_on_to_another_context),
            test!(async_api::sender_in_a_failed_call),
            test!(async_api::explicit_close_still_ends_the_receiver),
            test!(async_api::send_timeout_and_send_async),
            test!(async_api::two_tasks_await_one_receiver_under_tokio),
            test!(async_api::two_tasks_await_one_receiver_under_smol),
            test!(async_api::receiver_is_a_stream),
            test!(async_api::async_connect_and_select),
            test!(async_api::context_without_the_sender_cannot_end_the_channel),
            test!(async_api::send_timeout_gives_up_on_a_stalled_context),
            test!(async_api::sender_sent_back_to_the_receivers_process),
            test!(bare_host::static_build_runs_in_a_busybox_root, 60),
            test!(bare_host::dynamic_build_names_the_missing_loader, 300),
            test!(bare_host::read_only_root_is_a_clear_error, 60),
            test!(
                bare_host::static_build_runs_over_sshd_into_a_busybox_root,
                300
            ),
        ];
        let failed = harness::run_tests(&router, &tests);
        switch_user::cleanup();
        failed
    });
    std::process::exit(if code == 0 { 0 } else { 1 });
}
