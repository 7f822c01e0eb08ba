"""The lab's plain-words text, for students who have never heard of distillation. Kept apart from
the page so the wording can be edited (and proof-read) in one place."""

INTRO = """
A big, accurate network — the **teacher** — can train a small one — the **student**. Instead of showing
the student only the right answer for each image ("{answer}"), we show it the teacher's whole
answer: how likely the teacher finds *every* class. Those small probabilities on the wrong classes
("{alike}") tell the student which classes
look alike. Hinton called this **dark knowledge**. The **temperature ρ** decides how much of it we can see:
we divide the teacher's raw scores (logits) by ρ before turning them into probabilities.
"""

ANSWER = """
**Move the slider.** At ρ = 1 the teacher's answer is nearly all on one class: the dark knowledge is
there, but in probabilities too small to see. As ρ grows the answer softens: the runner-up classes
rise, in the order the teacher finds them similar, and at very high ρ everything flattens towards
"all classes equally likely", which tells the student nothing. The useful range lies in between.
"""

ENTROPY = """
**How spread out is the answer?** Entropy measures it: 0 when all the probability sits on one class,
ln K when it is spread evenly over all K classes. Its exponential, the **effective number of classes**,
reads more easily: "the teacher is hesitating between about 2.3 classes". Both rise with ρ, for every
image, because dividing by a larger ρ shrinks the gaps between the scores. Blue: the image chosen above;
grey: the average over all test images. Between "one class" on the left and "all classes" on the right
lies the range where the answer says the most.
"""

SIMILARITY = """
**Which classes does the teacher think alike?** Average the teacher's answers over all test images of
each class: row *{row}* shows where the teacher puts its probability for {rows}, apart from *{row}*
itself (the diagonal is left blank, in grey). These are the similarities the student learns for free — no
label ever says "{looks}". Raise ρ to make them brighter; their order hardly changes.
"""

WHY_RHO2 = """
**Why multiply the soft term by ρ²?** The student learns by following gradients. Dividing the logits by
ρ makes the soft term's gradient shrink roughly like 1/ρ² once ρ is large (red line): at ρ = 20 it is
20² = 400 times weaker than it should be and far below the pull of the hard labels (grey line), so the
teacher's advice would be drowned. Multiplying by ρ² (blue line) puts it back on one scale whatever ρ you
pick, so changing ρ changes *what* the teacher says, not *how loudly*. Computed here from the real
teacher's and a real student's logits.
"""

EXPERIMENTS = """
**Try it for real.** Each button trains small students in the background (your page stays usable);
results appear here when the runs finish. Nothing you do here can change the shipped teacher.
"""

SWEEP = """
**Temperature sweep.** Students identical except for ρ ∈ {1, 2, 4, 8, 16, 32}, each trained with three
seeds: the chart shows the mean and, as error bars, the spread over seeds. On ten classes the differences
between temperatures are small — often smaller than that spread, and then they are noise, not a lesson.
The sentence under the chart says what this sweep actually shows.
"""

OMIT = """
**Hinton's omitted-class experiment.** The student never sees a single image of one class during
training — that class is removed from its training (transfer) set. Yet the teacher's soft labels on the
other images mention it ("{mention}"), so the student learns what the class
looks like. It rarely dares to predict it, though, because that class never won during training. Raising
that one class's bias — one number, chosen on the **validation** images, never on the test images —
reveals what the student learned.
"""

ALPHA = """
**Soft labels, hard labels, or both?** α weighs the usual right-answer loss, β the teacher's soft labels.
*Hard only* is ordinary training (the teacher is ignored); *soft only* learns from the teacher alone,
without any label; *both* is Hinton's mix. Each is trained with three seeds (mean ± std): compare the
differences with the error bars before drawing a conclusion.
"""


FEW_LABELS = """
**Few labels, a teacher.** Labels are expensive; images often are not. Suppose only a handful of the
{total:,} training digits carry a label. A student trained **from scratch** can learn from those alone. A
**distilled** student gets the same labelled digits *and* the teacher's soft labels on the other
{unlabelled:,} images, whose labels it never sees. The teacher was trained on all the labels: distillation
passes on what it learned without passing on the labels. Both students are the same small network
({student}), trained with the same seeds, on the same labelled digits, for the same number of steps. This
trains in a few seconds here, on the digits whichever dataset is chosen above.
"""

FEW_LABELS_AFTER = """
**What to look for.** The grey curve (from scratch) stops rising early: a few labelled images are soon
learned by heart, and nothing more is there to learn. The blue curve (with the teacher) keeps climbing
towards the teacher's line, because every unlabelled image still says something: the teacher's soft label
tells the student what the digit is *and* what it looks like. The fewer the labels, the larger the gap.
"""


# The examples in the text above, in each lab dataset's own classes.
EXAMPLES = {
    "fashion-mnist": {"answer": "this is a shirt",
                      "alike": "a bit like a T-shirt, a little like a pullover, nothing like a sandal",
                      "row": "Shirt", "rows": "shirts", "looks": "a shirt looks like a T-shirt",
                      "mention": "this dress is a little like a trouser"},
    "digits": {"answer": "this is a 7", "alike": "a bit like a 1, a little like a 9, nothing like a 0",
               "row": "8", "rows": "eights", "looks": "an 8 looks a bit like a 3",
               "mention": "this 9 is a little like a 4"},
}


def for_dataset(text: str, dataset: str) -> str:
    """One of the texts above with the examples of `dataset` (Fashion-MNIST's for any other)."""
    return text.format(**EXAMPLES.get(dataset, EXAMPLES["fashion-mnist"]))
