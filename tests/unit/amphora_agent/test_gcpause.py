import gc

from amphora_agent import gcpause


def test_paused_restores_what_it_found():
    assert gc.isenabled()
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            assert not gc.isenabled()
        # The inner pause found it disabled: it stays so.
        assert not gc.isenabled()
    assert gc.isenabled()
    try:
        with gcpause.paused():
            raise KeyError
    except KeyError:
        pass
    assert gc.isenabled()


def test_overlapping_pauses_of_two_threads():
    # A enters, B enters, A leaves first: B still runs with gc paused.
    import threading
    a_in, a_out, b_in, b_checked = (threading.Event() for _ in range(4))
    seen = {}

    def thread_a():
        with gcpause.paused():
            a_in.set()
            b_in.wait(10)
        a_out.set()

    def thread_b():
        a_in.wait(10)
        with gcpause.paused():
            b_in.set()
            a_out.wait(10)
            seen['after_a_left'] = gc.isenabled()
        b_checked.set()

    threads = [threading.Thread(target=f) for f in (thread_a, thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert b_checked.is_set()
    assert seen == {'after_a_left': False}
    assert gc.isenabled()


def test_a_disabled_gc_stays_disabled():
    gc.disable()
    try:
        with gcpause.paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()
