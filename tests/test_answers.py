"""The outcome check of data files (GSM8K and MATH layouts) against a corpus of graded cases.

Each case is (layout, response, reference answer, verdict): the verdict a careful grader gives, with the rules that
keep the check safe to optimise in RL: no credit for a `\\boxed{` that never closes, none for a MATH response without
a box, none for a response that states several different answers (a hedge), and none for a bare last number. Then the
rule for several answers in one response, and twenty answers that would cost math-verify seconds each.
"""

import time

import pytest

import data

G, M = "gsm8k", "math"

CASES = [
    # GSM8K layout: the answer follows "####" or "the answer is"
    (G, "She has 3+4 = 7 apples.\n#### 7", "7", True),
    (G, "#### 1,234", "1234", True),                                      # thousands separators
    (G, "Total: 14400 dollars.\n#### 14400", "14,400", True),
    (G, "#### 1,000,000", "1000000", True),
    (G, "#### 999999", "1,000,000", False),                               # exact, not within a tolerance
    (G, "It is now 4-9 = -5 degrees.\nThe answer is: -5.", "-5", True),   # negative, trailing period
    (G, "The answer is -5", "5", False),                                  # the sign matters
    (G, "The answer is \u22125", "-5", True),                             # a Unicode minus
    (G, "#### -3", "-3", True),
    (G, "The answer is 4/8.", "1/2", True),                               # equal fractions
    (G, "The answer is 0.5", "1/2", True),                                # a decimal against a fraction
    (G, "The answer is 1/3", "0.333", False),                             # close is not equal
    (G, "The answer is $5.00.", "5", True),                               # dollars and trailing zeros
    (G, "The answer is 2.50", "2.5", True),
    (G, "3.140 is what we get.\n#### 3.140", "3.14", True),
    (G, "The answer is 50%.", "50", True),                                # percent
    (G, "#### 18 dollars", "18", True),                                   # a unit after the number
    (G, "The answer is 72 apples.", "72", True),
    (G, "He ran 12 miles, so the answer is 12.", "12", True),
    (G, "The answer is 1,500.", "1500", True),
    (G, "The answer is \\boxed{12}.", "12", True),                        # a box counts in GSM8K too
    (G, "So 6/8 = 3/4", "3/4", False),                                    # no answer stated: a bare last number
    (G, "The total is 5 + 3 = 8 apples.", "8", False),
    (G, "I do not know.", "7", False),
    (G, "", "0", False),
    (G, "First 5, then 7. The answer is 7 or 8.", "7", False),            # hedges
    (G, "The answer is 7, or maybe 8.", "8", False),
    (G, "The answer is 12 dollars and 50 cents", "12", False),
    (G, "#### 7\n#### 8", "8", False),                                    # two different final answers
    (G, "#### 8\nSo again: #### 8", "8", True),                           # the same answer twice is no hedge
    (G, "The answer is -5 degrees", "-5", True),
    (G, "The answer is 3 hours and 20 minutes", "200", False),
    # MATH layout: the last \boxed{} is the answer, and there must be one
    (M, r"The sum is \boxed{\frac{3}{4}}.", r"\frac{3}{4}", True),
    (M, r"\boxed{\dfrac{3}{4}}", "0.75", True),                           # dfrac, and a fraction against a decimal
    (M, r"\boxed{\frac12}", r"\frac{1}{2}", True),                        # \frac12 shorthand
    (M, r"\boxed{-\frac{3}{4}}", "-3/4", True),
    (M, r"\boxed{\frac{7}{2}}", "3.5", True),
    (M, r"\boxed{3.5}", r"\frac72", True),
    (M, r"\boxed{1/4}", r"\frac{1}{4}", True),
    (M, r"\boxed{\dfrac{1}{4}}", r"\tfrac{1}{4}", True),
    (M, r"\boxed{0.3333333}", r"\frac{1}{3}", False),                     # a rounded decimal is not the fraction
    (M, r"\boxed{\frac{1}{3}}", "0.33", False),
    (M, r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{3}}{2}", True),      # nested braces
    (M, r"\boxed{\frac{\sqrt{3}}{2}}", r"\frac{\sqrt{2}}{2}", False),
    (M, r"\boxed{5\sqrt{2}}", r"5 \sqrt{2}", True),                        # spaces
    (M, r"\boxed{\sqrt2}", r"\sqrt{2}", True),                            # shorthand without braces
    (M, r"\boxed{3\sqrt2}", r"3\sqrt{2}", True),
    (M, r"\boxed{\sqrt{12}}", r"2\sqrt{3}", True),                        # the same number written otherwise
    (M, r"\boxed{\sqrt[3]{8}}", "2", True),
    (M, r"\boxed{x^{2}+1}", "x^2+1", True),                               # braces around a one-character exponent
    (M, r"\boxed{a_{1}}", "a_1", True),                                   # ... and subscript
    (M, r"\boxed{2^{10}}", "1024", True),
    (M, r"\boxed{x^2}", "x^3", False),
    (M, r"\boxed{x+1}", "x + 1", True),
    (M, r"\boxed{1+x}", "x+1", True),
    (M, r"\boxed{y = 2x + 3}", "2x+3", True),                             # "y =" in front
    (M, r"\boxed{x = 4}", "4", True),
    (M, r"$\boxed{x = 2}$", "2", True),
    (M, r"\boxed{\left( 2, 2 \right)}", "(2, 2)", True),                  # \left \right
    (M, r"\boxed{(2,2)}", "(2,3)", False),
    (M, r"\boxed{(1, 2)}", "(2, 1)", False),                              # an ordered pair
    (M, r"\boxed{(1, 2]}", "(1,2]", True),                                # intervals
    (M, r"\boxed{(1, 2)}", "(1,2]", False),
    (M, r"\boxed{(-\infty, 3)}", r"(-\infty,3)", True),
    (M, r"\boxed{[0, \infty)}", r"[0,\infty)", True),
    (M, r"\boxed{x \in [2, 5]}", "[2,5]", True),
    (M, r"\boxed{\infty}", r"\infty", True),
    (M, r"\boxed{-\infty}", r"\infty", False),
    (M, r"\boxed{\{1, 2, 3\}}", r"\{3, 2, 1\}", True),                    # a set
    (M, r"\boxed{60^\circ}", r"60^\circ", True),                          # degrees
    (M, r"\boxed{60^{\circ}}", "60", True),
    (M, r"\boxed{50\%}", "50", True),                                     # percent
    (M, r"\boxed{12\%}", r"12\%", True),
    (M, r"\boxed{5 \text{ cm}}", "5", True),                              # units
    (M, r"\boxed{6 \text{ cm}^2}", "6", True),
    (M, r"\boxed{10}", r"10\text{ inches}", True),
    (M, r"\boxed{10 \mbox{ inches}}", "10", True),
    (M, r"\boxed{\$18}", "18", True),                                     # money
    (M, r"\boxed{\$1,234.50}", "1234.5", True),
    (M, r"\boxed{1,\!000}", "1000", True),                                # LaTeX thousands separators
    (M, r"\boxed{1{,}000}", "1000", True),
    (M, r"\boxed{-7}", "-7", True),                                       # negative numbers
    (M, r"\boxed{-7}", "7", False),
    (M, r"\boxed{\pi}", "3.14", False),
    (M, r"\boxed{2\pi}", r"2 \pi", True),
    (M, r"\boxed{\frac{\pi}{2}}", r"\pi/2", True),
    (M, r"\boxed{\text{Evelyn}}", r"\text{Evelyn}", True),                # text answers
    (M, r"\boxed{\text{ Bob}}", r"\text{ Evelyn}", False),
    (M, r"\boxed{\text{(A)}}", "(A)", True),
    (M, r"\boxed{\textbf{(C)}}", r"\text{(C)}", True),
    (M, r"\boxed{(C)}", r"\text{(D)}", False),
    (M, r"\boxed{}", r"\text{ }", False),                                 # an empty answer never matches
    (M, r"first \boxed{3}, then \boxed{4}", "4", False),                  # two different boxes: a hedge
    (M, r"\boxed{\frac{1}{2}} or \boxed{\frac{1}{3}}", r"\frac{1}{2}", False),
    (M, r"\boxed{3} \quad so \quad \boxed{3}", "3", True),                # the same answer twice is no hedge
    (M, r"\boxed{3 \text{ or } 4}", "3", False),                          # a hedge inside one box
    (M, r"\boxed{3, 4}", "3", False),
    (M, r"\boxed{\pm 2}", "2", False),
    (M, r"\boxed{2, -2}", r"\pm 2", True),
    (M, r"\boxed{\frac{1}{2}", "1/2", False),                             # a box that never closes
    (M, r"So the answer is \boxed{7", "7", False),
    (M, r"\boxed{7} and then \boxed{8", "7", False),
    (M, r"We get $x = 5$, so the answer is 5.", "5", False),              # MATH without a box
    (M, r"Therefore $\frac{3}{4}$.", r"\frac{3}{4}", False),
    (M, "#### 9", "9", False),
    (M, r"\fbox{7}", "7", True),
    (M, r"\boxed 9", "9", True),                                          # \boxed without braces
    (M, r"The final answer is $\boxed{42}$.", "42", True),
]


def check(layout, response, gold):
    return data.answers_match(data.extract_answer(response, layout), gold)


@pytest.mark.parametrize("layout, response, gold, verdict", CASES)
def test_answer_cases(layout, response, gold, verdict):
    assert check(layout, response, gold) == verdict


def test_the_corpus_covers_every_class():
    assert len(CASES) >= 80
    assert sum(v for *_, v in CASES) >= 40 and sum(not v for *_, v in CASES) >= 30   # both verdicts, in numbers


def test_extraction_details():
    assert data.last_boxed(r"a \boxed{\frac{a}{b^{2}}} b") == r"\frac{a}{b^{2}}"
    assert data.last_boxed(r"\boxed{\frac{1}{2}") is None
    assert data.extract_answer("no digits") is None
    assert data.extract_answer("#### 1,500") == "1,500"
    assert data.extract_answer(r"\boxed{3} and \boxed{4}") is None        # a hedge states no one answer
    assert data.extract_answer("The answer is 5", "math") is None         # MATH: the box or nothing
    assert data.extract_answer("The answer is 5", "gsm8k") == "5"
    assert data.answers_match(None, "5") is False


# --------------------------------------------------------------------------------------------------------------
# Several final answers in one response: credit only if they are all equal as numbers or expressions

SEVERAL = [
    (M, r"\boxed{7}\boxed{7.0}", "7", True),                              # one number, written twice
    (M, r"\boxed{\frac{1}{2}} that is \boxed{0.5}", "1/2", True),
    (G, "#### 7\nSo the answer is 7.00", "7", True),
    (M, "\\boxed{7}\n#### 8", "7", False),                                # a box and a marker that disagree
    (M, "\\boxed{7}\n#### 8", "8", False),
    (G, "The answer is 8.\n\\boxed{7}", "7", False),
    (M, r"\boxed{7}\boxed{7.0}\boxed{7.00}\boxed{14/2}\boxed{\frac{14}{2}}", "7", False),   # five texts: more than 4
    (M, r"The answer is \boxed{7}.", "7", True),                          # a marker that holds the box is that box
]


@pytest.mark.parametrize("layout, response, gold, verdict", SEVERAL)
def test_several_answers_earn_credit_only_if_all_are_equal(layout, response, gold, verdict):
    assert check(layout, response, gold) == verdict


# --------------------------------------------------------------------------------------------------------------
# Answers that cost math-verify seconds each (measured before the guard: 51 s for the twenty, 5.0-5.5 s each for the
# towers, the factorials of factorials, (y+1)^{999} and 50 nested parentheses; 5,000 digits raised Python's ValueError
# for integers over 4,300 digits): refused before math-verify, and credited only when written as the reference

DIGITS = "1234567890" * 500                                               # 5,000 digits
ADVERSARIAL = [
    (M, r"\boxed{9^{9^{9^{9}}}}", "7", False),                            # power towers
    (M, r"\boxed{9^{9^{9^{9}}}}", r"9^{9^{9^{9}}}", True),                # ... right as written
    (M, r"\boxed{10^{10^{10}}}", "10", False),
    (M, r"\boxed{2^{2^{2^{2^{2^{2}}}}}}", "65536", False),
    (M, r"\boxed{9^9^9^9}", "7", False),
    (M, r"\boxed{e^{e^{e^{e^{10}}}}}", "7", False),
    (M, r"\boxed{(y+1)^{999}}", "7", False),                              # large exponents
    (M, r"\boxed{(x+y+z)^{40}}", "7", False),
    (M, r"\boxed{1000000^{1000000}}", "7", False),
    (M, r"\boxed{(10^{10})!}", "7", False),                               # factorials
    (M, r"\boxed{10!!}", "7", False),
    (M, r"\boxed{(20!)!}", "7", False),
    (M, r"\boxed{99999!}", "7", False),
    (M, r"\boxed{\binom{999999}{499999}}", "7", False),
    (M, r"\boxed{" + r"\frac{1}{" * 10 + "2" + "}" * 10 + "}", "2", False),   # nested fractions: equal to 2,
    # but refused (nested deeper than MAX_NESTING) and not written as the reference
    (M, r"\boxed{" + "(" * 50 + "8" + ")" * 50 + "}", "7", False),          # nested parentheses
    (M, r"\boxed{" + DIGITS + "}", "7", False),                             # thousands of digits
    (M, r"\boxed{" + DIGITS + "}", DIGITS, True),                           # ... right
    (G, "#### " + DIGITS + "1", DIGITS, False),                             # ... one digit more
    (M, r"\boxed{" + "+".join(["1"] * 2000) + "}", "7", False),             # a long sum
]


def test_twenty_adversarial_answers_are_refused_before_math_verify_and_earn_nothing_unless_right(monkeypatch):
    assert len(ADVERSARIAL) == 20
    monkeypatch.setattr(data, "latex_equal", lambda *a: pytest.fail(f"math-verify was asked about {a[0][:40]}"))
    start = time.perf_counter()
    for layout, response, gold, verdict in ADVERSARIAL:
        assert data.too_costly(data.extract_answer(response, layout)) is not None, response[:40]
        assert check(layout, response, gold) == verdict, response[:40]
    print(f"20 adversarial answers checked in {time.perf_counter() - start:.4f} s")   # shown with pytest -s


@pytest.mark.parametrize("answer", [r"2^{10}", r"60^\circ", r"6 \text{ cm}^2", r"x^{2}+1", r"\frac{100!}{98!}", "n!",
                                    r"\binom{10}{3}", r"\binom{n}{2}", r"\left(\frac{1}{2}\right)^{3}", r"1,\!000",
                                    r"\left( \frac{1}{2}, \frac{\sqrt{3}}{2} \right)", r"x^4+x^3+x^2+x+1"])
def test_ordinary_answers_are_not_refused(answer):
    assert data.too_costly(answer) is None
