"""Potentials φ(x, c) ≥ 0: the evidence that turns a prior into a target, held in log space.

Each kind is one module: a dataclass whose fields are its options (in Python, `Exponential(sentiment(),
beta=0.1)`; in a target file, `exponential: {reward: sentiment, beta: 0.1}`), registered in `POTENTIALS`:

    exponential          Exponential(r, β)           log φ = r(x)/β                the KL-regularised RL posterior
    constraint           Constraint(b)               log φ = 0 if b(x) else −inf   a pointwise constraint (GDC)
    exponential_family   ExponentialFamily(f, λ)     log φ = λ·f(x)
    moments              constrain(prior, f, μ)      λ fitted so that E_π*[f] = μ  (GDC's moment constraints)
    forbid               Forbid(strings)             no string occurs               prefix-aware (SMC steers by it)
    starts_with          StartsWith(text)            the text starts so             prefix-aware
    best_of              best_of(prior, r, n)        φ_n from the prior's CDF of r  the law of the best of n samples
    regex                regex(prior, pattern)       x ended by EOS matches it      judged on bytes; prefix-aware
    grammar              grammar(prior, lark)        x is a sentence of it          a context-free grammar (Lark)
    json_schema          json_schema(prior, schema)  x is JSON valid under it
    power                power(prior, α)             log φ = (α−1)·log π0(x|c)     π* ∝ π0^α; prefix-aware
    teacher              teacher(prior, π_T, γ)      log φ = γ·(log π_T − log π0)   π* ∝ π0^(1−γ)·π_T^γ

The protocol (`Potential`, with what each potential can do asked of it), the product of potentials and the
registry live in `base`; `language.py` holds what regex, grammar and json_schema share (`InLanguage`, masking).
"""

import bayeslm.modelling.target  # noqa: F401  (it sets Potential.target_type, what `prior * potential` makes)
from bayeslm.modelling.potentials.base import POTENTIALS, Potential, Product, Tempered, factors, statistics_of
from bayeslm.modelling.potentials.best_of import BestOf, BestOfN, best_of
from bayeslm.modelling.potentials.constraint import Constraint, HardConstraint, hard_constraints, only_constraints
from bayeslm.modelling.potentials.exponential import Exponential
from bayeslm.modelling.potentials.exponential_family import ExponentialFamily
from bayeslm.modelling.potentials.forbid import Forbid
from bayeslm.modelling.potentials.grammar import Grammar, grammar
from bayeslm.modelling.potentials.json_schema import JSONSchema, json_schema
from bayeslm.modelling.potentials.language import InLanguage, masked
from bayeslm.modelling.potentials.moments import Moments, constrain, fit_coefficients
from bayeslm.modelling.potentials.power import Power, PowerOf, power
from bayeslm.modelling.potentials.regex import Regex, regex
from bayeslm.modelling.potentials.starts_with import StartsWith
from bayeslm.modelling.potentials.teacher import Teacher, TeacherOf, teacher

__all__ = ["POTENTIALS", "BestOf", "BestOfN", "Constraint", "Exponential", "ExponentialFamily", "Forbid", "Grammar",
           "HardConstraint", "InLanguage", "JSONSchema", "Moments", "Potential", "Power", "PowerOf", "Product", "Regex",
           "StartsWith", "Teacher", "TeacherOf", "Tempered", "best_of", "constrain", "factors", "fit_coefficients",
           "grammar", "hard_constraints", "json_schema", "masked", "only_constraints", "power", "regex",
           "statistics_of", "teacher"]
