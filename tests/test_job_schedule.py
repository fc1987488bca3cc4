"""The scheduling of ``run --server`` without servers: bounded tries, servers marked down, no retry of a
rejected prompt, stranded jobs failed when every server is down, worker threads that finish; a server that
hangs up on a posted prompt counts as down."""

import threading

import pytest

from diffportrait3d.cli.job_schedule import JobSchedule, ScheduledJob


def schedule(names, servers, tries=3):
    return JobSchedule([ScheduledJob(name) for name in names], servers, tries=tries)


def test_a_job_whose_server_dies_goes_to_another_live_server():
    plan = schedule(["a", "b"], ["s1", "s2"])
    a = plan.next_job("s1")
    b = plan.next_job("s2")
    plan.server_failed(a, "connection refused")
    assert plan.next_job("s1") is None  # s1 is down
    plan.succeeded(b)
    again = plan.next_job("s2")
    assert again is a and [t.server for t in a.attempts] == ["s1", "s2"]
    plan.succeeded(a)
    assert plan.next_job("s2") is None
    assert plan.counts() == {"done": 2, "failed": 0, "queued": 0}
    assert plan.down == {"s1": "connection refused"}


def test_tries_are_bounded():
    plan = schedule(["a"], ["s1", "s2", "s3"], tries=2)
    job = plan.next_job("s1")
    plan.server_failed(job, "timed out")
    assert plan.next_job("s2") is job
    plan.server_failed(job, "reset")
    assert job.state == "failed" and plan.next_job("s3") is None
    assert job.reason == "s1: timed out; s2: reset"


def test_a_rejected_prompt_is_not_retried():
    plan = schedule(["a"], ["s1", "s2"])
    job = plan.next_job("s1")
    plan.failed(job, "Prompt outputs failed validation")
    assert job.state == "failed" and plan.next_job("s2") is None and not plan.down
    assert "validation" in job.reason


def test_queued_jobs_fail_when_every_server_is_down():
    plan = schedule(["a", "b", "c"], ["s1"])
    job = plan.next_job("s1")
    plan.server_failed(job, "gone")
    assert [j.state for j in plan.jobs] == ["failed"] * 3
    assert plan.jobs[1].reason == "-: no live server left"
    with pytest.raises(ValueError):
        JobSchedule([], ["s1"], tries=0)


def test_workers_in_threads_finish_every_job_when_one_server_dies():
    plan = schedule([f"job{i}" for i in range(20)], ["good", "bad"])

    def worker(server):
        while (job := plan.next_job(server)) is not None:
            if server == "bad":
                plan.server_failed(job, "died")
            else:
                plan.succeeded(job)

    threads = [threading.Thread(target=worker, args=(s,)) for s in ("bad", "good")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    assert plan.counts() == {"done": 20, "failed": 0, "queued": 0}


def test_run_with_no_live_server_stops_with_a_clear_message(tmp_path, workflow_kit):
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    images = workflow_kit.write_test_images(tmp_path / "images")
    result = workflow_kit.run_cli("run", "--image", str(images["portrait"]), "--out", str(tmp_path / "out"),
                                  "--server", f"http://127.0.0.1:{port}", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert "cannot reach the server" in result.stderr and "is ComfyUI running there?" in result.stderr


def test_a_server_that_hangs_up_on_post_prompt_is_down_not_a_rejection():
    """A server killed while ``POST /prompt`` is in flight closes the connection: the job must go to another
    server (server_down), not be reported as a rejected prompt that is never retried."""
    import socket
    import threading

    from diffportrait3d.cli.server_client import ComfyServer, ServerError

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def hang_up():
        connection, _ = listener.accept()
        connection.recv(65536)
        connection.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    server = ComfyServer(f"http://127.0.0.1:{listener.getsockname()[1]}", timeout=10)
    with pytest.raises(ServerError) as raised:
        server.queue_prompt({"1": {}}, "client")
    thread.join(5)
    listener.close()
    assert raised.value.server_down, str(raised.value)
    assert "rejected" not in str(raised.value)
