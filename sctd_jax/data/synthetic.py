"""The built-in pretraining corpus: English-like documents from a small grammar.

Nothing is downloaded: the corpus is generated from a lexicon and grammar
written for this project, deterministically from (seed, index), so any
document can be produced on demand by the input pipeline. It is meant to be
easy enough to train on a CPU yet to hold real context dependencies, so that
a masked language model can get well below the unigram entropy of its words:

- Topics. A document picks one of `TOPICS` (farm, sea, kitchen, ...); its
  nouns, verbs and adjectives come mostly from that topic's lexicon, the rest
  from a small general one. Verbs choose plausible subjects and objects
  ("the shepherd fed the lambs", not "the rake fed the shepherd").
- Agreement. The main verb agrees with the subject in number and carries the
  tense, which time adverbials repeat ("yesterday", "every morning", "next
  week"); attractor phrases ("the farmer near the old barns walks") and
  coordinated subjects ("the chef and the waiter were tired") sit in between.
- Templates: transitive, passive ("the soup was tasted by the chef"),
  intransitive with a place, copular ("the hens will be hungry"), locative
  and existential ("there are two cows in the barn"), coordinated predicates,
  and subordinate clauses (because / when / while / after / before, with
  English sequence of tenses: "he will sleep when they arrive").
- Discourse. A document has a small cast of recurring people and animals,
  introduced as "a cow" and then "the cow" or "it"; pronouns and possessives
  ("his", "their") agree with their antecedents; most sentences keep the
  document's tense.

Each `Sentence` carries the tense and subject number of its main clause, the
labels of the probing tasks (SentEval's Tense and SubjNum); and
`paraphrase_pairs` gives an MRPC-like task built from the same grammar.
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import functools
import hashlib
import itertools
import random
from typing import Iterator, NamedTuple

from sctd_jax.data import lexicon

TENSES = ('past', 'present', 'future')
SUBJECT_NUMBERS = ('singular', 'plural')
TOPICS: tuple[str, ...] = tuple(lexicon.TOPIC_LEXICONS)


@dataclasses.dataclass(frozen=True)
class Sentence:
  text: str             # Lower-case words separated by spaces, ending with '.'.
  tense: str            # 'past' | 'present' | 'future' of the main clause.
  subject_number: str   # 'singular' | 'plural' of the main clause's subject.


_ANIMATE = ('person', 'animal')
_PRONOUNS = {'he': ('he', 'him', 'his'), 'she': ('she', 'her', 'her'),
             'it': ('it', 'it', 'its'), 'they': ('they', 'them', 'their')}
_SUBJECT, _OBJECT, _POSSESSIVE = range(3)

_PLURAL_QUANTIFIERS = ('some', 'two', 'three', 'four', 'many', 'several')
_INDEFINITE = frozenset(('a', *_PLURAL_QUANTIFIERS))
_DEMONSTRATIVE_NUMBER = {'this': 'these', 'these': 'this', 'that': 'those', 'those': 'that'}
_PLACE_PREPOSITIONS = ('near', 'behind', 'beside', 'outside', 'around')
_ATTRACTOR_PREPOSITIONS = {'place': ('near', 'behind', 'beside', 'from'),
                           'object': ('with', 'near', 'beside')}
_TIME_ADVERBIALS = {
    tense: tuple(tuple(phrase.split()) for phrase in phrases.split(', '))
    for tense, phrases in dict(
        past='yesterday, last night, last week, last month, last year, '
             'last summer, last winter, two days ago, a week ago, long ago',
        present='every day, every morning, every evening, every week, '
                'every summer, on sundays, on weekdays, each spring, nowadays',
        future='tomorrow, tomorrow morning, next week, next month, next year, '
               'next summer, next winter, in two days, in a week, soon').items()}
_SUBORDINATORS = ('because', 'when', 'while', 'after', 'before')
# Temporal clauses take the present for a future main clause ("he will
# sleep when they arrive", not "when they will arrive").
_TEMPORAL_TENSE = {'past': 'past', 'present': 'present', 'future': 'present'}
_BE = {('past', False): ('was',), ('past', True): ('were',),
       ('present', False): ('is',), ('present', True): ('are',),
       ('future', False): ('will', 'be'), ('future', True): ('will', 'be')}

# Sentence shapes and how often they occur; 'passive' is the transitive
# proposition with the object as subject.
_TEMPLATE_WEIGHTS = {'transitive': 36, 'passive': 8, 'intransitive': 20,
                     'copular': 16, 'locative': 12}
_TEMPLATES = tuple(_TEMPLATE_WEIGHTS)
_TEMPLATE_CUM_WEIGHTS = tuple(itertools.accumulate(_TEMPLATE_WEIGHTS.values()))
_PREDICATE_TEMPLATES = ('transitive', 'intransitive', 'copular')
_TOPICALITY = 0.85          # Share of words from the topic's own lexicon.
_PLURAL_P = 0.4
_ADJECTIVE_P = 0.2
_ATTRACTOR_P = 0.15
_COORDINATED_SUBJECT_P = 0.07
_COORDINATED_PREDICATE_P = 0.12
_SUBORDINATE_P = 0.2
_CAST_P = 0.6               # Chance a role goes to a recurring entity.
_PRONOUN_P = 0.5            # Chance a salient entity is referred to by pronoun.
_KEEP_TENSE_P = 0.8         # Chance a sentence keeps its document's tense.

_DOCUMENT_STREAM, _LABELLED_STREAM, _PARAPHRASE_STREAM = range(3)


# ------------------------------------------------------------- lexical types
class _Noun(NamedTuple):
  singular: str
  plural: str | None    # None for mass nouns.
  kind: str
  preposition: str = ''  # The preposition a place takes ("on the beach").


class _Verb(NamedTuple):
  base: str
  third: str            # Third person singular present.
  past: str
  participle: str


# (topic items, general items): drawn from with probability _TOPICALITY / rest.
_Pool = tuple[tuple, tuple]


@dataclasses.dataclass(frozen=True)
class _Topic:
  name: str
  nouns: dict[str, _Pool]           # kind -> nouns
  countable: dict[str, _Pool]       # kind -> nouns that have a plural
  adjectives: dict[str, _Pool]      # kind -> adjectives
  transitive: dict[str, _Pool]      # subject kind -> (verb, object kinds)
  passive: dict[str, _Pool]         # object kind -> (verb, subject kinds)
  intransitive: dict[str, _Pool]    # subject kind -> verbs
  subject_kinds: dict[str, tuple[str, ...]]  # template -> possible subject kinds
  object_kinds: tuple[str, ...]     # inanimate kinds other than place


def _items(pool: _Pool) -> tuple:
  return pool[0] + pool[1]


def _add_s(word: str, es_after_o: bool) -> str:
  """Regular plural (es_after_o=False) or third person singular (True)."""
  if word.endswith(('s', 'x', 'z', 'ch', 'sh')) or (es_after_o and word.endswith('o')):
    return word + 'es'
  if word.endswith('y') and word[-2] not in 'aeiou':
    return word[:-1] + 'ies'
  return word + 's'


def _regular_past(verb: str) -> str:
  if verb.endswith('e'):
    return verb + 'd'
  if verb.endswith('y') and verb[-2] not in 'aeiou':
    return verb[:-1] + 'ied'
  return verb + 'ed'


def _parse_noun(spec: str, kind: str, preposition: str = '') -> _Noun:
  if spec.endswith('*'):
    return _Noun(spec[:-1], None, kind, preposition)
  singular, _, plural = spec.partition('/')
  return _Noun(singular, plural or _add_s(singular, es_after_o=False), kind, preposition)


def _parse_verb(spec: str) -> _Verb:
  base, *irregular = spec.split()
  past = irregular[0] if irregular else _regular_past(base)
  if past == base:
    # "they cut" would be both past and present: the tense label must be
    # recoverable from the words.
    raise ValueError(f'verb {base!r} has the same past and present form')
  return _Verb(base, _add_s(base, es_after_o=True), past, irregular[-1] if irregular else past)


def _expand(selector: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
  """The concrete noun kinds (present in a topic) a selector names."""
  objects = tuple(k for k in kinds if k not in _ANIMATE and k != 'place')
  wildcards = {'animate': _ANIMATE, 'object': objects, 'any': _ANIMATE + objects}
  out: list[str] = []
  for name in selector.split():
    if name not in wildcards and name not in kinds:
      raise ValueError(f'unknown noun kind {name!r}')
    out += wildcards.get(name, (name,))
  return tuple(dict.fromkeys(out))


def _tables(spec: dict, kinds: tuple[str, ...]) -> dict[str, dict[str, list]]:
  """One lexicon's items indexed by kind, for each part of `_Topic`."""
  t: dict[str, dict[str, list]] = {
      name: collections.defaultdict(list)
      for name in ('nouns', 'adjectives', 'transitive', 'passive', 'intransitive')}
  for kind, words in spec['nouns'].items():
    t['nouns'][kind] += [_parse_noun(w, kind) for w in words.split()]
  for preposition, words in spec['places'].items():
    t['nouns']['place'] += [_parse_noun(w, 'place', preposition) for w in words.split()]
  for selector, words in spec['adjectives'].items():
    for kind in _expand(selector, kinds):
      t['adjectives'][kind] += words.split()
  for verb_spec, selector in spec['transitive'].items():
    verb = _parse_verb(verb_spec)
    subjects, objects = (_expand(s, kinds) for s in selector.split('>'))
    for kind in subjects:
      t['transitive'][kind].append((verb, objects))
    for kind in objects:
      t['passive'][kind].append((verb, subjects))
  for verb_spec, selector in spec['intransitive'].items():
    for kind in _expand(selector, kinds):
      t['intransitive'][kind].append(_parse_verb(verb_spec))
  return t


def _compile(name: str, spec: dict) -> _Topic:
  kinds = tuple(sorted(set(spec['nouns']) | set(lexicon.GENERAL['nouns']) | {'place'}))
  own, general = _tables(spec, kinds), _tables(lexicon.GENERAL, kinds)

  def pools(part, keep=lambda item: True):
    out = {}
    for kind in sorted(set(own[part]) | set(general[part])):
      pool = tuple(tuple(filter(keep, t[part].get(kind, ()))) for t in (own, general))
      if any(pool):
        out[kind] = pool
    return out

  nouns = pools('nouns')
  adjectives = pools('adjectives')
  transitive, passive = pools('transitive'), pools('passive')
  intransitive = pools('intransitive')
  countable = pools('nouns', lambda noun: noun.plural is not None)
  subject_kinds = dict(
      transitive=tuple(transitive), passive=tuple(passive),
      intransitive=tuple(intransitive),
      copular=tuple(k for k in adjectives if k in nouns),
      locative=tuple(k for k in nouns if k != 'place'))
  for template, options in subject_kinds.items():
    if not any(k in countable for k in options):
      raise ValueError(f'{name}: template {template!r} has no countable subject')
  # Redraws that avoid a repeated word ("the dog and the dog", "a sterile
  # bandage is sterile") need a second word to draw.
  for part, table in (('nouns', nouns), ('adjectives', adjectives)):
    for kind, pool in table.items():
      if len(set(_items(pool))) < 2:
        raise ValueError(f'{name}: kind {kind!r} needs at least two {part}')
  return _Topic(name, nouns, countable, adjectives, transitive, passive, intransitive,
                subject_kinds, _expand('object', kinds))


_TOPIC_TABLES = {name: _compile(name, spec) for name, spec in lexicon.TOPIC_LEXICONS.items()}


@functools.cache
def _noun_pool(topic: str, kinds: tuple[str, ...], countable: bool) -> _Pool:
  """The nouns of several kinds as one pool, so that a kind the topic lacks
  (a kitchen has no animals of its own) comes from the general lexicon only."""
  table = _TOPIC_TABLES[topic].countable if countable else _TOPIC_TABLES[topic].nouns
  return tuple(tuple(n for k in kinds if k in table for n in table[k][i]) for i in (0, 1))


def _draw(rng: random.Random, pool: _Pool):
  own, general = pool
  if own and (not general or rng.random() < _TOPICALITY):
    return rng.choice(own)
  return rng.choice(general)


# ------------------------------------------------------ propositions and NPs
class _Entity(NamedTuple):
  noun: _Noun
  plural: bool
  pronoun: str          # Key of _PRONOUNS.


class _NP(NamedTuple):
  entity: _Entity
  determiner: str = ''  # '' for a pronoun.
  adjective: str = ''
  modifier: tuple[str, _NP] | None = None   # Prepositional phrase (attractor).
  conjunct: _NP | None = None               # "X and Y".


class _Predicate(NamedTuple):
  verb: _Verb | None    # None: a form of "be".
  obj: _NP | None = None
  adjectives: tuple[str, ...] = ()          # Copular; empty with a place: locative.
  place: tuple[str, _NP] | None = None


class _Clause(NamedTuple):
  """A proposition: what is said, not yet how."""
  subject: _NP
  predicates: tuple[_Predicate, ...]        # Joined by "and".
  tense: str
  adverbial: tuple[str, ...] = ()


class _Style(NamedTuple):
  """How a clause is said; no field changes its meaning."""
  passive: bool = False     # Single transitive predicate only.
  there: bool = False       # Locative with an indefinite subject only.
  fronted: bool = False     # Time adverbial before the subject.
  synonyms: bool = False    # Words of lexicon.SYNONYMS replaced by their partner.


def _entity(rng: random.Random, noun: _Noun, plural: bool) -> _Entity:
  if plural:
    pronoun = 'they'
  elif noun.kind != 'person':
    pronoun = 'it'
  elif noun.singular in lexicon.MASCULINE:
    pronoun = 'he'
  elif noun.singular in lexicon.FEMININE:
    pronoun = 'she'
  else:
    pronoun = rng.choice(('he', 'she'))   # A farmer, a doctor: either.
  return _Entity(noun, plural, pronoun)


def _is_plural(np_: _NP) -> bool:
  return np_.entity.plural or np_.conjunct is not None


def _determiner(rng: random.Random, entity: _Entity, definite: bool) -> str:
  if definite:
    if rng.random() < 0.85:
      return 'the'
    singular = rng.choice(('this', 'that'))
    return _DEMONSTRATIVE_NUMBER[singular] if entity.plural else singular
  if entity.plural:
    return rng.choice(_PLURAL_QUANTIFIERS)
  return 'some' if entity.noun.plural is None else 'a'


class _Discourse:
  """What a document has said so far: its topic, recurring entities, who was
  mentioned (for "a cow" then "the cow") and who a pronoun may refer to."""

  def __init__(self, rng: random.Random, topic: _Topic, cast_size: int = 0):
    self.rng, self.topic = rng, topic
    self.mentioned: set[_Entity] = set()
    self.salient: list[_Entity] = []    # Entities of the previous clause(s).
    self.current: list[_Entity] = []    # Entities of the sentence being built.
    self.cast = [self.new_entity(_ANIMATE) for _ in range(cast_size)]

  def new_entity(self, kinds: tuple[str, ...], plural: bool | None = None) -> _Entity:
    rng = self.rng
    noun = _draw(rng, _noun_pool(self.topic.name, kinds, bool(plural)))
    if plural is None:
      plural = noun.plural is not None and rng.random() < _PLURAL_P
    return _entity(rng, noun, plural)

  def pick(self, kinds: tuple[str, ...], plural: bool | None = None,
           exclude: _Entity | None = None, possessive: str = '',
           attractor_p: float = 0.0) -> _NP:
    """A noun phrase for someone or something of `kinds`: a pronoun for a
    salient entity, else a recurring entity or a new one, described."""
    rng = self.rng
    salient = self.fitting(self.salient, kinds, plural, exclude)
    if salient and rng.random() < _PRONOUN_P:
      entity = rng.choice(salient)
      self.current.append(entity)
      return _NP(entity)
    cast = self.fitting(self.cast, kinds, plural, exclude)
    if cast and rng.random() < _CAST_P:
      entity = rng.choice(cast)
    else:
      entity = self.new_entity(kinds, plural)
      while entity == exclude:
        entity = self.new_entity(kinds, plural)
    return self.describe(entity, possessive, attractor_p)

  @staticmethod
  def fitting(entities: list[_Entity], kinds: tuple[str, ...], plural: bool | None,
              exclude: _Entity | None) -> list[_Entity]:
    return [e for e in entities if e.noun.kind in kinds and e != exclude
            and (plural is None or e.plural == plural)]

  def describe(self, entity: _Entity, possessive: str = '',
               attractor_p: float = 0.0) -> _NP:
    rng = self.rng
    definite = entity in self.mentioned
    if possessive and not definite and rng.random() < 0.25:
      determiner = possessive
    else:
      determiner = _determiner(rng, entity, definite)
    modifier = self.attractor(entity) if attractor_p and rng.random() < attractor_p else None
    self.mentioned.add(entity)
    self.current.append(entity)
    return _NP(entity, determiner, self.adjective(entity.noun.kind), modifier)

  def adjective(self, kind: str) -> str:
    if self.rng.random() >= _ADJECTIVE_P or kind not in self.topic.adjectives:
      return ''
    return _draw(self.rng, self.topic.adjectives[kind])

  def background(self, kinds: tuple[str, ...], plural: bool, definite_p: float) -> _NP:
    """A place or thing that is only scenery: not tracked for reference."""
    rng = self.rng
    noun = _draw(rng, _noun_pool(self.topic.name, kinds, False))
    entity = _entity(rng, noun, noun.plural is not None and plural)
    determiner = _determiner(rng, entity, rng.random() < definite_p)
    return _NP(entity, determiner, self.adjective(noun.kind))

  def attractor(self, head: _Entity) -> tuple[str, _NP]:
    """A modifier whose noun mostly differs in number from its head, so that
    agreement has to skip it ("the farmer near the barns is ...")."""
    rng = self.rng
    group = 'place' if rng.random() < 0.5 else 'object'
    kinds = ('place',) if group == 'place' else self.topic.object_kinds
    plural = (rng.random() < 0.7) != head.plural
    return rng.choice(_ATTRACTOR_PREPOSITIONS[group]), self.background(kinds, plural, 0.6)

  def place(self, p: float = 1.0) -> tuple[str, _NP] | None:
    rng = self.rng
    if rng.random() >= p:
      return None
    np_ = self.background(('place',), rng.random() < 0.15, 0.8)
    natural = np_.entity.noun.preposition
    return (natural if rng.random() < 0.6 else rng.choice(_PLACE_PREPOSITIONS)), np_


def _possessive(np_: _NP) -> str:
  if np_.entity.noun.kind not in _ANIMATE:
    return ''
  return _PRONOUNS['they' if _is_plural(np_) else np_.entity.pronoun][_POSSESSIVE]


def _predicate(d: _Discourse, template: str, subject: _NP) -> _Predicate:
  rng, topic, kind = d.rng, d.topic, subject.entity.noun.kind
  if template == 'transitive':
    verb, object_kinds = _draw(rng, topic.transitive[kind])
    obj = d.pick(object_kinds, exclude=subject.entity, possessive=_possessive(subject))
    return _Predicate(verb, obj=obj, place=d.place(0.25))
  if template == 'intransitive':
    return _Predicate(_draw(rng, topic.intransitive[kind]), place=d.place(0.7))
  if template == 'copular':
    first = _draw(rng, topic.adjectives[kind])
    while first == subject.adjective:   # Not "a sterile bandage is sterile".
      first = _draw(rng, topic.adjectives[kind])
    second = _draw(rng, topic.adjectives[kind]) if rng.random() < 0.2 else first
    same = second in (first, lexicon.SYNONYMS.get(first), subject.adjective)
    return _Predicate(None, adjectives=(first,) if same else (first, second))
  return _Predicate(None, place=d.place())   # Locative.


def _clause(d: _Discourse, template: str, tense: str, plural: bool | None,
            adverbial_p: float, coordinate_p: float) -> tuple[_Clause, _Style]:
  """A clause of `template` whose surface subject has number `plural` (None:
  any), with the style that template implies."""
  rng, topic = d.rng, d.topic
  kinds = topic.subject_kinds[template]
  if template == 'passive':
    patient = d.pick(kinds, plural, attractor_p=_ATTRACTOR_P)
    verb, agent_kinds = _draw(rng, topic.passive[patient.entity.noun.kind])
    agent = d.pick(agent_kinds, exclude=patient.entity)
    subject, predicates = agent, [_Predicate(verb, obj=patient, place=d.place(0.2))]
  else:
    subject = d.pick(kinds, plural, attractor_p=_ATTRACTOR_P)
    kind = subject.entity.noun.kind
    if subject.determiner and plural is not False and rng.random() < _COORDINATED_SUBJECT_P:
      other = d.new_entity((kind,))
      while other.noun == subject.entity.noun:   # Not "the dogs and a dog".
        other = d.new_entity((kind,))
      subject = subject._replace(conjunct=d.describe(other))
    predicates = [_predicate(d, template, subject)]
    if template != 'locative' and rng.random() < coordinate_p:
      second = rng.choice([t for t in _PREDICATE_TEMPLATES if kind in topic.subject_kinds[t]])
      predicates.append(_predicate(d, second, subject))
  adverbial = (rng.choice(_TIME_ADVERBIALS[tense])
               if adverbial_p and rng.random() < adverbial_p else ())
  there = (template == 'locative' and subject.determiner in _INDEFINITE
           and subject.conjunct is None and rng.random() < 0.5)
  style = _Style(passive=template == 'passive', there=there,
                 fronted=bool(adverbial) and rng.random() < 0.4)
  return _Clause(subject, tuple(predicates), tense, adverbial), style


# ----------------------------------------------------------------- surface
def _np_words(np_: _NP, case: int = _SUBJECT) -> list[str]:
  if not np_.determiner:
    return [_PRONOUNS[np_.entity.pronoun][case]]
  noun = np_.entity.noun
  head = noun.plural if np_.entity.plural else noun.singular
  words = [np_.determiner, np_.adjective, head] if np_.adjective else [np_.determiner, head]
  if np_.modifier:
    words += _pp_words(np_.modifier)
  if np_.conjunct:
    words += ['and', *_np_words(np_.conjunct, case)]
  return words


def _pp_words(pp: tuple[str, _NP] | None) -> list[str]:
  return [pp[0], *_np_words(pp[1])] if pp else []


def _verb_words(p: _Predicate, tense: str, plural: bool) -> list[str]:
  if p.verb is None:
    return list(_BE[tense, plural])
  if tense == 'future':
    return ['will', p.verb.base]
  if tense == 'past':
    return [p.verb.past]
  return [p.verb.base if plural else p.verb.third]


def _predicate_words(p: _Predicate, tense: str, plural: bool, first: bool) -> list[str]:
  words = _verb_words(p, tense, plural)
  if not first and words[0] == 'will':
    words = words[1:]   # "will feed the hens and clean the barn".
  if p.obj:
    words += _np_words(p.obj, _OBJECT)
  for i, adjective in enumerate(p.adjectives):
    words += ['and', adjective] if i else [adjective]
  return words + _pp_words(p.place)


def _realize(c: _Clause, s: _Style) -> tuple[list[str], bool]:
  """The words of clause `c` said in style `s`, and whether its surface
  subject is plural."""
  first = c.predicates[0]
  if s.passive:
    plural = _is_plural(first.obj)
    words = [*_np_words(first.obj), *_BE[c.tense, plural], first.verb.participle, 'by',
             *_np_words(c.subject, _OBJECT), *_pp_words(first.place)]
  elif s.there:
    plural = _is_plural(c.subject)
    words = ['there', *_BE[c.tense, plural], *_np_words(c.subject), *_pp_words(first.place)]
  else:
    plural = _is_plural(c.subject)
    words = _np_words(c.subject)
    for i, p in enumerate(c.predicates):
      words += (['and'] if i else []) + _predicate_words(p, c.tense, plural, first=i == 0)
  if s.fronted:
    return [*c.adverbial, *words], plural
  return words + list(c.adverbial), plural


def _all_nouns() -> dict[str, _Noun]:
  return {n.singular: n for t in _TOPIC_TABLES.values()
          for pool in t.nouns.values() for n in _items(pool)}


def _all_verbs() -> tuple[dict[str, _Verb], dict[str, _Verb]]:
  """(transitive, intransitive) verbs by base form."""
  return ({v.base: v for t in _TOPIC_TABLES.values()
           for pool in t.transitive.values() for v, _ in _items(pool)},
          {v.base: v for t in _TOPIC_TABLES.values()
           for pool in t.intransitive.values() for v in _items(pool)})


def _synonym_forms() -> dict[str, str]:
  """Every inflected form of a synonym pair, mapped to its partner's."""
  nouns = _all_nouns()
  transitive, intransitive = _all_verbs()
  verbs = {**intransitive, **transitive}
  forms = {}
  for a, b in lexicon.SYNONYMS.items():
    if a in nouns:
      forms.update({nouns[a].singular: nouns[b].singular, nouns[a].plural: nouns[b].plural})
    elif a in verbs:
      forms.update(zip(verbs[a], verbs[b]))
    else:
      forms[a] = b
  return forms


_SYNONYM_FORMS = _synonym_forms()
_VOWELS = tuple('aeiou')


def _text(words: list[str], synonyms: bool = False) -> str:
  if synonyms:
    words = [_SYNONYM_FORMS.get(w, w) for w in words]
  # "a" -> "an" comes last, as a synonym can change the next word (a huge / an enormous).
  words = ['an' if w == 'a' and nxt.startswith(_VOWELS) else w
           for w, nxt in zip(words, [*words[1:], ''])]
  return ' '.join(words) + '.'


def _template(rng: random.Random) -> str:
  draw = rng.random() * _TEMPLATE_CUM_WEIGHTS[-1]
  return _TEMPLATES[bisect.bisect(_TEMPLATE_CUM_WEIGHTS, draw)]


def _sentence(d: _Discourse, tense: str, plural: bool | None, adverbial_p: float) -> Sentence:
  """The next sentence of discourse `d`, its main clause in `tense` with a
  subject of number `plural` (None: any), maybe with a subordinate clause."""
  rng = d.rng
  template = _template(rng)
  clause, style = _clause(d, template, tense, plural, adverbial_p, _COORDINATED_PREDICATE_P)
  words, subject_plural = _realize(clause, style)
  if rng.random() < _SUBORDINATE_P:
    d.salient = list(d.current)   # Its pronouns may refer to the main clause.
    conjunction = rng.choice(_SUBORDINATORS)
    sub_tense = rng.choice(TENSES) if conjunction == 'because' else _TEMPORAL_TENSE[tense]
    sub, sub_style = _clause(d, rng.choice(_PREDICATE_TEMPLATES), sub_tense, None, 0.0, 0.0)
    words += [conjunction, *_realize(sub, sub_style)[0]]
  d.salient, d.current = d.current, []
  return Sentence(_text(words), tense, SUBJECT_NUMBERS[subject_plural])


# ------------------------------------------------------------- paraphrases
def _toggles(c: _Clause, s: _Style) -> list[str]:
  """The style fields that can be flipped for clause `c`."""
  p = c.predicates[0]
  names = []
  if p.obj is not None:
    names.append('passive')
  if (p.verb is None and not p.adjectives and c.subject.determiner in _INDEFINITE
      and c.subject.conjunct is None):
    names.append('there')
  if c.adverbial:
    names.append('fronted')
  if any(w in _SYNONYM_FORMS for w in _realize(c, s)[0]):
    names.append('synonyms')
  return names


def _restyle(rng: random.Random, c: _Clause, s: _Style, flips: int) -> _Style:
  names = _toggles(c, s)
  chosen = rng.sample(names, min(flips, len(names)))
  return s._replace(**{name: not getattr(s, name) for name in chosen})


def _with_predicate(c: _Clause, **fields) -> _Clause:
  return c._replace(predicates=(c.predicates[0]._replace(**fields),))


def _other_noun(d: _Discourse, np_: _NP | None) -> _NP | None:
  """`np_` about something else of the same kind, never a synonym."""
  if np_ is None:
    return None
  noun = np_.entity.noun
  options = [n for n in _items(d.topic.nouns[noun.kind])
             if n.singular not in (noun.singular, lexicon.SYNONYMS.get(noun.singular))
             and (n.plural is None) == (noun.plural is None)]
  if not options:
    return None
  return np_._replace(entity=_entity(d.rng, d.rng.choice(options), np_.entity.plural))


# Minimal changes of meaning, for the negative pairs. Each returns None
# where it does not apply; a change of tense always applies.
def _change_subject(d: _Discourse, c: _Clause) -> _Clause | None:
  subject = _other_noun(d, c.subject)
  return None if subject is None else c._replace(subject=subject)


def _change_object(d: _Discourse, c: _Clause) -> _Clause | None:
  obj = _other_noun(d, c.predicates[0].obj)
  return None if obj is None else _with_predicate(c, obj=obj)


def _change_place(d: _Discourse, c: _Clause) -> _Clause | None:
  place = c.predicates[0].place
  np_ = _other_noun(d, place and place[1])
  if np_ is None:
    return None
  natural = place[0] == place[1].entity.noun.preposition
  return _with_predicate(c, place=(np_.entity.noun.preposition if natural else place[0], np_))


def _change_verb(d: _Discourse, c: _Clause) -> _Clause | None:
  p, kind = c.predicates[0], c.subject.entity.noun.kind
  if p.verb is None:
    return None
  if p.obj is None:
    options = _items(d.topic.intransitive[kind])
  else:
    options = [v for v, objects in _items(d.topic.transitive[kind])
               if p.obj.entity.noun.kind in objects]
  options = [v for v in options if v.base not in (p.verb.base, lexicon.SYNONYMS.get(p.verb.base))]
  return _with_predicate(c, verb=d.rng.choice(options)) if options else None


def _change_adjective(d: _Discourse, c: _Clause) -> _Clause | None:
  old = c.predicates[0].adjectives
  if not old:
    return None
  options = [a for a in _items(d.topic.adjectives[c.subject.entity.noun.kind])
             if a not in old and lexicon.SYNONYMS.get(a) not in old]
  return _with_predicate(c, adjectives=(d.rng.choice(options), *old[1:])) if options else None


def _change_number(d: _Discourse, c: _Clause) -> _Clause | None:
  s = c.subject
  if s.conjunct or s.entity.noun.plural is None:
    return None
  if s.determiner == 'a':
    determiner = d.rng.choice(_PLURAL_QUANTIFIERS)
  elif s.determiner in _PLURAL_QUANTIFIERS:
    determiner = 'a'
  else:
    determiner = _DEMONSTRATIVE_NUMBER.get(s.determiner, s.determiner)
  entity = _entity(d.rng, s.entity.noun, not s.entity.plural)
  return c._replace(subject=s._replace(entity=entity, determiner=determiner))


def _change_tense(d: _Discourse, c: _Clause) -> _Clause:
  tense = d.rng.choice([t for t in TENSES if t != c.tense])
  adverbial = d.rng.choice(_TIME_ADVERBIALS[tense]) if c.adverbial else ()
  return c._replace(tense=tense, adverbial=adverbial)


def _swap_roles(d: _Discourse, c: _Clause) -> _Clause | None:
  """Subject and object swapped ("the cat chased the dog"), where the verb allows it."""
  p = c.predicates[0]
  if p.obj is None:
    return None
  frames = _items(d.topic.transitive.get(p.obj.entity.noun.kind, ((), ())))
  if not any(v == p.verb and c.subject.entity.noun.kind in objects for v, objects in frames):
    return None
  return c._replace(subject=p.obj, predicates=(p._replace(obj=c.subject),))


_CHANGES = (_change_subject, _change_object, _change_place, _change_verb,
            _change_adjective, _change_number, _change_tense, _swap_roles)


def _mutate(d: _Discourse, c: _Clause) -> _Clause:
  """`c` with one applicable change of meaning, chosen uniformly."""
  changes = list(_CHANGES)
  d.rng.shuffle(changes)
  return next(out for change in changes if (out := change(d, c)) is not None)


def _pair(rng: random.Random, label: int) -> tuple[str, str, int]:
  while True:
    d = _Discourse(rng, _TOPIC_TABLES[rng.choice(TOPICS)])
    a, style = _clause(d, _template(rng), rng.choice(TENSES), None, 0.6, 0.0)
    style = style._replace(synonyms=rng.random() < 0.5)
    if label:
      b, b_style = a, _restyle(rng, a, style, 1 + (rng.random() < 0.3))
    else:
      # Negatives are restyled too, so that a change of form is no clue.
      b = _mutate(d, a)
      b_style = _restyle(rng, b, style, int(rng.random() < 0.5))
    texts = (_text(_realize(a, style)[0], style.synonyms),
             _text(_realize(b, b_style)[0], b_style.synonyms))
    if texts[0] != texts[1]:
      return texts[0], texts[1], label


# -------------------------------------------------------------- public API
class _Random(random.Random):
  """Python's RNG (the grammar makes many scalar draws, each several times
  cheaper than with numpy's Generator) with a choice() of one draw."""

  def choice(self, items):
    return items[int(self.random() * len(items))]


def _rng(seed: int, stream: int, index: int = 0) -> random.Random:
  """An RNG keyed by (seed, stream, index): the same on every run and platform
  (hash() is not used). The key is a 128-bit digest, as numpy's SeedSequence
  would cost more than generating a short document."""
  key = hashlib.blake2b(f'{seed},{stream},{index}'.encode(), digest_size=16).digest()
  return _Random(int.from_bytes(key, 'little'))


def sentences(seed: int, index: int) -> Iterator[Sentence]:
  """The sentences of `document(seed, index)`, each made when asked for: a
  reader that stops early (a full block) does not pay for the rest."""
  rng = _rng(seed, _DOCUMENT_STREAM, index)
  d = _Discourse(rng, _TOPIC_TABLES[rng.choice(TOPICS)], cast_size=rng.randint(2, 3))
  tense = rng.choice(TENSES)
  for i in range(rng.randint(4, 12)):
    yield _sentence(d, tense if rng.random() < _KEEP_TENSE_P else rng.choice(TENSES),
                    None, adverbial_p=0.6 if i == 0 else 0.25)


def document(seed: int, index: int) -> list[Sentence]:
  """Document `index` of the stream for `seed`: 4-12 sentences on one topic.
  Deterministic and random access: it depends on nothing but (seed, index)."""
  return list(sentences(seed, index))


def labelled_sentences(seed: int, count: int) -> list[Sentence]:
  """`count` independent sentences (each its own topic, no shared discourse)
  for probing and classification. Each tense, each subject number and each
  (tense, number) cell occurs count/3, count/2 and count/6 times, up to 1."""
  rng = _rng(seed, _LABELLED_STREAM)
  cells = [(TENSES[i % 3], i % 2 == 1) for i in range(count)]
  rng.shuffle(cells)
  return [_sentence(_Discourse(rng, _TOPIC_TABLES[rng.choice(TOPICS)]), tense, plural,
                    adverbial_p=0.35)
          for tense, plural in cells]


def paraphrase_pairs(seed: int, count: int) -> list[tuple[str, str, int]]:
  """`count` MRPC-like pairs (sentence_a, sentence_b, label), half of each label.

  Label 1: the same proposition said differently (active/passive, "there is"
  or not, synonyms, where the time adverbial goes). Label 0: a minimal change
  of meaning (subject, object, verb, place, adjective, number or tense, or
  subject and object swapped), often also said differently. The two texts of
  a pair always differ.
  """
  rng = _rng(seed, _PARAPHRASE_STREAM)
  labels = [i % 2 for i in range(count)]
  rng.shuffle(labels)
  return [_pair(rng, label) for label in labels]


def _lexicon() -> frozenset[str]:
  transitive, intransitive = _all_verbs()
  words = {'a', 'an', 'the', 'this', 'that', 'these', 'those', 'and', 'by', 'there',
           *_PLURAL_QUANTIFIERS, *_SUBORDINATORS, *_PLACE_PREPOSITIONS,
           *itertools.chain(*_ATTRACTOR_PREPOSITIONS.values()),
           *itertools.chain(*_PRONOUNS.values()), *itertools.chain(*_BE.values()),
           *itertools.chain(*itertools.chain(*_TIME_ADVERBIALS.values()))}
  for noun in _all_nouns().values():
    words.update(filter(None, (noun.singular, noun.plural, noun.preposition)))
  for verb in transitive.values():
    words.update(verb)
  for verb in intransitive.values():
    words.update((verb.base, verb.third, verb.past))
  for topic in _TOPIC_TABLES.values():
    for pool in topic.adjectives.values():
      words.update(_items(pool))
  return frozenset(words)


_LEXICON = _lexicon()


def lexicon_words() -> set[str]:
  """Every word the grammar can emit (the texts' words, without the final '.')."""
  return set(_LEXICON)
