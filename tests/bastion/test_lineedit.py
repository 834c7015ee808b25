from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from casemate.bastion.lineedit import (
    Echo,
    EditorEvent,
    EndOfInput,
    Interrupt,
    LineEditor,
    Submit,
    kube_completer,
)

PROMPT = "$ "
BELL = b"\a"
LEFT = b"\x1b[D"
RIGHT = b"\x1b[C"
UP = b"\x1b[A"
DOWN = b"\x1b[B"
PASTE_START = b"\x1b[200~"
PASTE_END = b"\x1b[201~"


def echoed(events: Sequence[EditorEvent]) -> bytes:
    return b"".join(event.data for event in events if isinstance(event, Echo))


def submitted(events: Sequence[EditorEvent]) -> list[str]:
    return [event.line for event in events if isinstance(event, Submit)]


def typed(data: bytes) -> LineEditor:
    editor = LineEditor(PROMPT)
    editor.feed(data)
    return editor


# Typing and submitting -----------------------------------------------------------------------


def test_start_shows_the_prompt() -> None:
    editor = LineEditor("casemate> ")
    assert editor.start() == b"\rcasemate> \x1b[K"
    assert editor.redraw() == editor.start()


def test_typing_echoes_and_enter_submits() -> None:
    editor = LineEditor(PROMPT)
    events = editor.feed(b"kubectl get pods")
    assert events == [Echo(b"\r$ kubectl get pods\x1b[K")]
    assert editor.line == "kubectl get pods"
    assert editor.cursor == len("kubectl get pods")
    events = editor.feed(b"\r")
    assert events == [Echo(b"\r\n"), Submit("kubectl get pods")]
    assert editor.line == ""
    assert editor.cursor == 0


def test_typed_text_is_drawn_before_the_submit_of_the_same_feed() -> None:
    events = LineEditor(PROMPT).feed(b"ab\r")
    assert events == [Echo(b"\r$ ab\x1b[K\r\n"), Submit("ab")]


def test_the_prompt_is_not_printed_after_a_submit_until_redraw() -> None:
    editor = LineEditor(PROMPT)
    editor.feed(b"x\r")
    events = editor.feed(b"y")  # typed ahead: the redraw includes the prompt
    assert events == [Echo(b"\r$ y\x1b[K")]
    assert editor.redraw() == b"\r$ y\x1b[K"


@pytest.mark.parametrize(
    "data",
    [b"one\rtwo\r", b"one\ntwo\n", b"one\r\ntwo\r\n", b"one\r\ntwo\n", b"one\ntwo\r\n"],
)
def test_cr_lf_and_crlf_end_a_line_once(data: bytes) -> None:
    assert submitted(LineEditor(PROMPT).feed(data)) == ["one", "two"]


def test_crlf_split_across_feeds_counts_once() -> None:
    editor = LineEditor(PROMPT)
    assert submitted(editor.feed(b"one\r")) == ["one"]
    assert submitted(editor.feed(b"\ntwo\r")) == ["two"]
    assert submitted(editor.feed(b"\n")) == []


@pytest.mark.parametrize(("data", "count"), [(b"\r\r", 2), (b"\n\n", 2), (b"\n\r", 2)])
def test_empty_lines_are_submitted(data: bytes, count: int) -> None:
    assert submitted(LineEditor(PROMPT).feed(data)) == [""] * count


# Editing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", [b"\x7f", b"\x08"])
def test_backspace(key: bytes) -> None:
    editor = typed(b"kubectx" + key + b"l")
    assert editor.line == "kubectl"


def test_backspace_at_start_rings_the_bell() -> None:
    assert echoed(LineEditor(PROMPT).feed(b"\x7f")) == BELL


def test_insert_in_the_middle_and_cursor_rendering() -> None:
    editor = LineEditor(PROMPT)
    editor.feed(b"kubectl pods")
    events = editor.feed(LEFT * 4)
    assert events == [Echo(b"\r$ kubectl pods\x1b[K\x1b[4D")]
    assert editor.cursor == len("kubectl ")
    editor.feed(b"get ")
    assert editor.line == "kubectl get pods"
    assert editor.redraw() == b"\r$ kubectl get pods\x1b[K\x1b[4D"
    editor.feed(RIGHT * 2 + b"X")
    assert editor.line == "kubectl get poXds"


@pytest.mark.parametrize(
    ("left", "right"), [(LEFT, RIGHT), (b"\x1bOD", b"\x1bOC"), (b"\x02", b"\x06")]
)
def test_left_right_variants(left: bytes, right: bytes) -> None:
    editor = typed(b"abc" + left * 2 + b"X" + right + b"Y")
    assert editor.line == "aXbYc"


def test_left_and_right_stop_at_the_ends_silently() -> None:
    editor = LineEditor(PROMPT)
    editor.feed(b"ab")
    assert editor.feed(RIGHT) == []
    editor.feed(LEFT * 5)
    assert editor.cursor == 0
    assert BELL not in echoed(editor.feed(LEFT))


@pytest.mark.parametrize("home", [b"\x1b[H", b"\x1bOH", b"\x1b[1~", b"\x1b[7~", b"\x01"])
@pytest.mark.parametrize("end", [b"\x1b[F", b"\x1bOF", b"\x1b[4~", b"\x1b[8~", b"\x05"])
def test_home_and_end(home: bytes, end: bytes) -> None:
    editor = typed(b"get" + home + b"kubectl " + end + b" pods")
    assert editor.line == "kubectl get pods"


def test_delete_key_removes_the_character_under_the_cursor() -> None:
    editor = typed(b"kubectll" + LEFT + b"\x1b[3~")
    assert editor.line == "kubectl"
    assert echoed(editor.feed(b"\x1b[3~")) == BELL


def test_ctrl_u_kills_to_start() -> None:
    editor = typed(b"kubectl get pods" + LEFT * 5 + b"\x15")
    assert editor.line == " pods"
    assert editor.cursor == 0


def test_ctrl_k_kills_to_end() -> None:
    editor = typed(b"kubectl get pods" + LEFT * 5 + b"\x0b")
    assert editor.line == "kubectl get"


def test_ctrl_w_kills_the_previous_word() -> None:
    editor = typed(b"kubectl get pods -n kube-system  \x17")
    assert editor.line == "kubectl get pods -n "
    editor.feed(b"\x17\x17")
    assert editor.line == "kubectl get "


def test_ctrl_y_yanks_the_last_kill() -> None:
    editor = typed(b"kubectl get pods\x17get \x19")
    assert editor.line == "kubectl get get pods"
    assert echoed(LineEditor(PROMPT).feed(b"\x19")) == BELL


def test_word_movement() -> None:
    editor = typed(b"kubectl get pods\x1bb\x1bb")
    assert editor.cursor == len("kubectl ")
    editor.feed(b"\x1bf")
    assert editor.cursor == len("kubectl get")
    editor.feed(b"\x1b[1;5D")
    assert editor.cursor == len("kubectl ")
    editor.feed(b"\x1b[1;5C\x1b[1;5C")
    assert editor.cursor == len("kubectl get pods")
    editor.feed(b"\x1b\x7f")
    assert editor.line == "kubectl get "
    editor.feed(b"\x01\x1bd")
    assert editor.line == " get "


def test_ctrl_l_clears_the_screen_and_redraws() -> None:
    editor = typed(b"abc")
    assert editor.feed(b"\x0c") == [Echo(b"\x1b[H\x1b[2J\r$ abc\x1b[K")]


def test_set_prompt_and_redraw() -> None:
    editor = typed(b"abc" + LEFT)
    editor.set_prompt("ns=app $ ")
    assert editor.prompt == "ns=app $ "
    assert editor.redraw() == b"\rns=app $ abc\x1b[K\x1b[1D"


def test_wide_characters_move_the_cursor_by_their_width() -> None:
    editor = typed("日本x".encode() + LEFT * 3)
    assert editor.redraw() == "\r$ 日本x\x1b[K\x1b[5D".encode()


# History ------------------------------------------------------------------------------------


def test_history_up_down_keeps_the_line_being_typed() -> None:
    editor = LineEditor(PROMPT)
    editor.feed(b"kubectl get pods\rkubectl get ns\rhelm l")
    editor.feed(UP)
    assert editor.line == "kubectl get ns"
    editor.feed(b"\x1bOA")
    assert editor.line == "kubectl get pods"
    assert echoed(editor.feed(UP)) == BELL
    editor.feed(DOWN)
    assert editor.line == "kubectl get ns"
    editor.feed(DOWN)
    assert editor.line == "helm l"
    assert editor.cursor == len("helm l")
    assert echoed(editor.feed(DOWN)) == BELL


def test_ctrl_p_and_ctrl_n_navigate_history() -> None:
    editor = LineEditor(PROMPT, history=["a", "b"])
    editor.feed(b"\x10\x10")
    assert editor.line == "a"
    editor.feed(b"\x0e")
    assert editor.line == "b"


def test_recalled_line_can_be_edited_and_submitted() -> None:
    editor = LineEditor(PROMPT, history=["kubectl get pods"])
    events = editor.feed(UP + b" -A\r")
    assert submitted(events) == ["kubectl get pods -A"]
    assert editor.history == ["kubectl get pods", "kubectl get pods -A"]


def test_history_skips_empty_lines_and_repeats() -> None:
    editor = LineEditor(PROMPT)
    editor.feed(b"a\ra\r\r   \rb\ra\r")
    assert editor.history == ["a", "b", "a"]


def test_history_is_bounded() -> None:
    editor = LineEditor(PROMPT, history=["h1", "h2", "h3"], history_size=3)
    editor.feed(b"x\ry\r")
    assert editor.history == ["h3", "x", "y"]
    assert LineEditor(PROMPT, history=["a", "b"], history_size=1).history == ["b"]
    assert LineEditor(PROMPT, history=["a"], history_size=0).history == []
    nothing = LineEditor(PROMPT, history_size=0)
    nothing.feed(b"a\r")
    assert nothing.history == []


def test_seed_history_drops_entries_that_could_not_be_typed() -> None:
    editor = LineEditor(
        PROMPT, history=["ok", "bad\x1b[31m", "tab\there", " ", "x" * 20], max_line=10
    )
    assert editor.history == ["ok"]


def test_history_property_is_a_copy() -> None:
    editor = LineEditor(PROMPT, history=["a"])
    editor.history.append("b")
    assert editor.history == ["a"]


# Ctrl-C / Ctrl-D ------------------------------------------------------------------------------


def test_ctrl_c_cancels_the_line_and_shows_a_new_prompt() -> None:
    editor = LineEditor(PROMPT, history=["old"])
    editor.feed(b"kubectl delete" + UP)
    events = editor.feed(b"\x03")
    assert events == [Echo(b"^C\r\n"), Interrupt(), Echo(b"\r$ \x1b[K")]
    assert editor.line == ""
    editor.feed(UP)
    assert editor.line == "old"
    assert editor.history == ["old"]


def test_ctrl_d_on_empty_line_ends_input() -> None:
    events = LineEditor(PROMPT).feed(b"\x04")
    assert events == [Echo(b"\r\n"), EndOfInput()]


def test_ctrl_d_deletes_the_character_under_the_cursor() -> None:
    editor = typed(b"kubectl" + LEFT * 7 + b"\x04")
    assert editor.line == "ubectl"
    editor.feed(b"\x05")
    events = editor.feed(b"\x04")
    assert events == [Echo(BELL)]
    assert editor.line == "ubectl"


# UTF-8 ----------------------------------------------------------------------------------------


def test_utf8_split_across_feeds() -> None:
    editor = LineEditor(PROMPT)
    data = "é€😀".encode()
    for i in range(len(data)):
        events = editor.feed(data[i : i + 1])
        assert BELL not in echoed(events)
    assert editor.line == "é€😀"


def test_utf8_incomplete_sequence_is_not_echoed_yet() -> None:
    editor = LineEditor(PROMPT)
    assert editor.feed(b"\xe2\x82") == []
    assert editor.feed(b"\xac") == [Echo("\r$ €\x1b[K".encode())]


@pytest.mark.parametrize(
    ("data", "line"),
    [
        (b"a\xffb", "ab"),  # never valid
        (b"a\x80b", "ab"),  # continuation without a lead
        (b"\xc3(", "("),  # lead followed by ASCII: the ASCII byte is kept
        (b"\xc0\xaf", ""),  # overlong '/'
        (b"\xe0\x80\xaf", ""),  # overlong
        (b"\xed\xa0\x80", ""),  # UTF-16 surrogate
        (b"\xf4\x90\x80\x80", ""),  # above U+10FFFF
        (b"\xe2\x82\r", None),  # cut short by Enter: Enter still submits
    ],
)
def test_invalid_utf8_rings_the_bell_and_is_dropped(data: bytes, line: str | None) -> None:
    editor = LineEditor(PROMPT)
    events = editor.feed(data)
    assert BELL in echoed(events)
    if line is None:
        assert submitted(events) == [""]
    else:
        assert editor.line == line


@pytest.mark.parametrize(
    "char",
    ["\u0085", "\u009b", "\u202e", "\u200b", "\u2028", "\u2029", "\ufeff"],
)
def test_c1_controls_and_invisible_format_characters_are_refused(char: str) -> None:
    editor = LineEditor(PROMPT)
    events = editor.feed(b"a" + char.encode() + b"b")
    assert editor.line == "ab"
    assert BELL in echoed(events)


# Control characters and escape sequences ------------------------------------------------------


@pytest.mark.parametrize(
    "byte", [0x00, 0x07, 0x0F, 0x11, 0x12, 0x13, 0x14, 0x16, 0x18, 0x1A, 0x1C, 0x1F]
)
def test_other_control_characters_are_ignored(byte: int) -> None:
    editor = LineEditor(PROMPT)
    events = editor.feed(b"a" + bytes([byte]) + b"b")
    assert editor.line == "ab"
    assert BELL in echoed(events)


@pytest.mark.parametrize(
    "sequence",
    [
        b"\x1b[31m",  # SGR colour
        b"\x1b[1;2;3;4x",  # unknown CSI with parameters
        b"\x1b[?1049h",  # private parameters
        b"\x1b[2 q",  # intermediate byte
        b"\x1b[" + b"9" * 100 + b"A",  # absurdly long parameters: not a cursor key
        b"\x1b]0;title\x07",  # OSC ended by BEL
        b"\x1b]0;ti\xc3\xa9tle\x1b\\",  # OSC ended by ST, UTF-8 inside
        b"\x1bP1$r0m\x1b\\",  # DCS
        b"\x1b_apc\x1b\\",  # APC
        b"\x1b(B",  # charset designation
        b"\x1bOP",  # F1
        b"\x1b[15~",  # F5
        b"\x1b[201~",  # paste end outside a paste
        b"\x1bz",  # unknown ESC final
        b"\x1b[I",  # focus in
    ],
)
def test_escape_sequences_are_consumed(sequence: bytes) -> None:
    editor = LineEditor(PROMPT)
    editor.feed(b"ab" + sequence + b"cd")
    assert editor.line == "abcd"
    assert editor.cursor == 4


def test_escape_sequence_split_across_feeds() -> None:
    editor = LineEditor(PROMPT)
    for byte in b"ab\x1b]0;some title\x07\x1b[31mc":
        editor.feed(bytes([byte]))
    assert editor.line == "abc"


def test_unknown_sequences_ring_the_bell() -> None:
    assert echoed(LineEditor(PROMPT).feed(b"\x1b[31m")) == BELL


def test_control_character_cuts_an_osc_string_short() -> None:
    # an unterminated OSC must not swallow the session: Enter and Ctrl-C still work
    editor = LineEditor(PROMPT)
    events = editor.feed(b"ab\x1b]0;never ended\rcd\x03")
    assert submitted(events) == ["ab"]
    assert Interrupt() in events


def test_escape_then_enter_submits() -> None:
    assert submitted(LineEditor(PROMPT).feed(b"ls\x1b\r")) == ["ls"]


# Bracketed paste --------------------------------------------------------------------------------


def test_bracketed_paste_inserts_text_and_newlines_submit() -> None:
    editor = LineEditor(PROMPT)
    editor.feed(b"echo ")
    events = editor.feed(
        PASTE_START + b"kubectl get pods\nkubectl get ns\r\nhelm\tls" + PASTE_END + b" -A"
    )
    assert submitted(events) == ["echo kubectl get pods", "kubectl get ns"]
    assert editor.line == "helm ls -A"
    assert not editor.pasting


def test_paste_split_across_feeds() -> None:
    editor = LineEditor(PROMPT)
    for chunk in (b"\x1b[20", b"0~abc", b"\x03\x04\x7f", b"\x1b[2", b"01~d"):
        events = editor.feed(chunk)
        assert not any(isinstance(event, (Interrupt, EndOfInput)) for event in events)
    assert editor.line == "abcd"


def test_paste_ignores_keys_and_escape_sequences() -> None:
    editor = LineEditor(PROMPT)
    editor.feed(PASTE_START + b"a\x1b[Db\x1b[31mc\x1bOAd\x1bbe\x1b]0;t\x07f" + PASTE_END)
    assert editor.line == "abcdef"


def test_large_paste_is_drawn_once() -> None:
    editor = LineEditor(PROMPT)
    events = editor.feed(PASTE_START + b"x" * 5000 + PASTE_END)
    assert events == [Echo(b"\r$ " + b"x" * 5000 + b"\x1b[K")]


# Length limit ---------------------------------------------------------------------------------


def test_max_line_drops_characters_with_a_bell() -> None:
    editor = LineEditor(PROMPT, max_line=5)
    events = editor.feed(b"abcdefg")
    assert editor.line == "abcde"
    assert echoed(events).count(BELL) == 2
    editor.feed("\x7fé".encode())  # 2 bytes do not fit in 1
    assert editor.line == "abcd"
    editor.feed("\x7f\x7fé".encode())
    assert editor.line == "abé"


def test_max_line_applies_to_paste() -> None:
    editor = LineEditor(PROMPT, max_line=10)
    editor.feed(PASTE_START + b"0123456789abc\nxy" + PASTE_END)
    assert editor.history == ["0123456789"]
    assert editor.line == "xy"


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        LineEditor(PROMPT, max_line=0)
    with pytest.raises(ValueError):
        LineEditor(PROMPT, history_size=-1)


# Tab completion -------------------------------------------------------------------------------


class Recorder:
    """A completer that answers from a fixed list and records what it was asked."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words = words
        self.asked: list[str] = []

    def __call__(self, text: str) -> list[str]:
        self.asked.append(text)
        word = text.split(" ")[-1]
        return [w for w in self.words if w.startswith(word)]


def test_tab_single_candidate_inserts_rest_and_space() -> None:
    completer = Recorder(["describe", "delete", "get"])
    editor = LineEditor(PROMPT, completer=completer)
    editor.feed(b"kubectl g\t")
    assert editor.line == "kubectl get "
    assert completer.asked == ["kubectl g"]


def test_tab_completes_at_the_cursor() -> None:
    completer = Recorder(["get"])
    editor = LineEditor(PROMPT, completer=completer)
    editor.feed(b"kubectl g pods" + LEFT * 5 + b"\t")
    assert completer.asked == ["kubectl g"]
    assert editor.line == "kubectl get  pods"


def test_tab_inserts_the_longest_common_prefix() -> None:
    editor = LineEditor(PROMPT, completer=Recorder(["describe", "delete", "get"]))
    events = editor.feed(b"kubectl d\t")
    assert editor.line == "kubectl de"
    assert BELL not in echoed(events)


def test_second_tab_lists_the_candidates() -> None:
    editor = LineEditor(PROMPT, completer=Recorder(["describe", "delete", "get"]))
    editor.feed(b"kubectl de")
    assert editor.feed(b"\t") == [Echo(BELL)]
    events = editor.feed(b"\t")
    assert events == [Echo(b"\r\ndescribe  delete\r\n\r$ kubectl de\x1b[K")]
    assert editor.line == "kubectl de"


def test_tab_after_an_insertion_does_not_list_at_once() -> None:
    editor = LineEditor(PROMPT, completer=Recorder(["describe", "delete"]))
    editor.feed(b"kubectl d\t")
    assert editor.feed(b"\t") == [Echo(BELL)]
    assert b"describe" in echoed(editor.feed(b"\t"))


def test_a_key_between_tabs_resets_the_listing() -> None:
    editor = LineEditor(PROMPT, completer=Recorder(["describe", "delete"]))
    editor.feed(b"kubectl de\t" + LEFT + RIGHT)
    assert editor.feed(b"\t") == [Echo(BELL)]


def test_tab_without_candidates_or_completer_rings_the_bell() -> None:
    assert echoed(LineEditor(PROMPT, completer=Recorder([])).feed(b"x\t")) == b"\r$ x\x1b[K\a"
    editor = LineEditor(PROMPT)
    editor.feed(b"x\t")
    assert editor.line == "x"


def test_tab_ignores_bad_candidates() -> None:
    def completer(text: str) -> list[str]:
        return ["get\x1b[2J", "other", "getx", "getx"]

    editor = LineEditor(PROMPT, completer=completer)
    editor.feed(b"g\t")
    assert editor.line == "getx "


def test_tab_completion_respects_max_line() -> None:
    editor = LineEditor(PROMPT, completer=Recorder(["describe"]), max_line=6)
    events = editor.feed(b"d\t")
    assert editor.line == "d"
    assert BELL in echoed(events)


def test_tab_does_not_add_a_space_after_slash_or_equals() -> None:
    editor = LineEditor(PROMPT, completer=Recorder(["--output=", "deploy/"]))
    editor.feed(b"--o\t")
    assert editor.line == "--output="


def test_editor_with_kube_completer() -> None:
    editor = LineEditor(PROMPT, completer=kube_completer)
    editor.feed(b"kub\tdesc\tdeploym\t-n app | gr\t")
    assert editor.line == "kubectl describe deployments -n app | grep "


# Property: arbitrary input ------------------------------------------------------------------

FRAGMENTS = [
    b"\x1b",
    b"[",
    b"]",
    b"O",
    b"P",
    b"\\",
    b"200~",
    b"201~",
    b"\x1b[200~",
    b"\x1b[201~",
    b"\x07",
    b"\r",
    b"\n",
    b"\t",
    b"\x03",
    b"\x04",
    b"\x7f",
    b"\x17",
    b"\x19",
    b"\x1b[A",
    b"\x1b[B",
    b"\x1b[D",
    b"\x1b[3~",
    b"kubectl get ",
    b"| ",
    b"--",
    b"\xc3",
    b"\xa9",
    b"\xe2\x82",
    b"\xf0\x9f\x98",
    b"\x80",
    b";",
    b"0",
    b"'",
]

chunks = st.lists(st.one_of(st.binary(max_size=12), st.sampled_from(FRAGMENTS)), max_size=40)


def check_line(line: str, max_line: int) -> None:
    assert len(line.encode("utf-8")) <= max_line
    assert not any(ord(char) < 0x20 or 0x7F <= ord(char) <= 0x9F for char in line), line


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chunks, st.integers(min_value=1, max_value=40), st.lists(st.text(max_size=20), max_size=5))
def test_arbitrary_bytes_never_break_the_editor(
    data: list[bytes], max_line: int, history: list[str]
) -> None:
    editor = LineEditor(PROMPT, history=history, completer=kube_completer, max_line=max_line)
    for chunk in data:
        events = editor.feed(chunk)
        for event in events:
            assert isinstance(event, (Echo, Submit, Interrupt, EndOfInput))
            if isinstance(event, Submit):
                check_line(event.line, max_line)
        check_line(editor.line, max_line)
        assert 0 <= editor.cursor <= len(editor.line)
        for entry in editor.history:
            check_line(entry, max_line)
        editor.redraw()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_all_input_in_one_feed_or_byte_by_byte_gives_the_same_lines(data: bytes) -> None:
    whole = LineEditor(PROMPT)
    lines = submitted(whole.feed(data))
    single = LineEditor(PROMPT)
    split: list[str] = []
    for byte in data:
        split += submitted(single.feed(bytes([byte])))
    assert lines == split
    assert whole.line == single.line
    assert whole.cursor == single.cursor


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_kube_completer_never_raises_and_candidates_extend_the_word(text: str) -> None:
    candidates = kube_completer(text)
    assert isinstance(candidates, list)
    word = text
    for sep in " \t|":
        word = word.rsplit(sep, 1)[-1]
    assert all(candidate.startswith(word) for candidate in candidates)


def test_local_flag_shadows_a_refused_global_flag_of_the_same_name() -> None:
    # `create rolebinding --user` names a subject of the binding; kubectl's global --user
    # (a kubeconfig user) is refused and never offered
    assert kube_completer("kubectl create rolebinding --us") == ["--user"]
    assert kube_completer("kubectl get --us") == []
