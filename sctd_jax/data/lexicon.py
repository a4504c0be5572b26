"""The words of the built-in corpus (`synthetic`): a general lexicon, one per
topic, synonym pairs and gendered nouns. Plain data; `synthetic` compiles it.
"""

# Nouns are grouped by kind; verbs and adjectives select kinds. A selector is
# a space-separated list of kinds, or 'animate' (person, animal), 'object'
# (every other kind but place) or 'any' (animate and object).
# Nouns: 'cow', 'goose/geese' (irregular plural) or 'hay*' (mass, no plural).
# Places are nouns of kind 'place' listed under the preposition they take.
# Verbs: 'walk', 'stop stopped' (irregular past) or 'eat ate eaten'; a
# transitive verb's selector reads 'subject kinds > object kinds'.
GENERAL = dict(
    nouns=dict(
        person='man/men woman/women child/children boy girl friend neighbour '
               'stranger visitor baby grandmother grandfather',
        animal='dog cat bird mouse/mice',
        thing='bag box basket book letter key rope lamp bottle coin blanket '
              'ball bucket'),
    places={'in': 'house room village town garden', 'on': 'road hill', 'at': 'gate'},
    adjectives={
        'animate': 'happy glad sad tired hungry angry calm brave proud lonely '
                   'sleepy young',
        'object': 'heavy clean dirty filthy broken wooden shiny cheap '
                  'expensive red blue green yellow',
        'animal object': 'brown white black grey',
        'any': 'big large small little old new huge enormous',
        'place': 'quiet empty crowded dark warm cold bright'},
    transitive={
        'see saw seen': 'animate > any', 'find found': 'animate > object animal',
        'carry': 'person > object animal', 'like': 'animate > any',
        'want': 'animate > object', 'watch': 'animate > animate',
        'bring brought': 'person > object', 'take took taken': 'person > object animal',
        'hold held': 'person > object animal', 'drop dropped': 'person > object',
        'lose lost': 'person > object animal', 'keep kept': 'person > object animal',
        'follow': 'animate > animate', 'help': 'person > person',
        'call': 'person > animate', 'visit': 'person > person place',
        'sweep swept': 'person > place', 'scrub scrubbed': 'person > object',
        'open': 'person > thing', 'throw threw thrown': 'person > thing',
        'chase': 'animate > animal', 'steal stole stolen': 'person animal > object',
        'break broke broken': 'person animal > object', 'greet': 'person > person',
        'forget forgot forgotten': 'person > object'},
    intransitive={
        'walk': 'animate', 'run ran': 'animate', 'sleep slept': 'animate',
        'wait': 'animate', 'sit sat': 'animate', 'stand stood': 'animate',
        'play': 'animate', 'rest': 'animate', 'hide hid': 'animate',
        'sing sang': 'animate', 'smile': 'person', 'laugh': 'person',
        'shout': 'person', 'yell': 'person', 'cry': 'person', 'wake woke': 'animate',
        'speak spoke': 'person', 'fall fell': 'any', 'hurry': 'animate',
        'rush': 'person'},
)

TOPIC_LEXICONS = {
    'farm': dict(
        nouns=dict(
            person='farmer farmhand shepherd milkmaid ploughman/ploughmen',
            animal='cow hen horse sheep/sheep goose/geese pig goat duck ox/oxen '
                   'lamb rooster calf/calves donkey',
            crop='potato/potatoes carrot turnip pumpkin cabbage pear plum bean '
                 'apple seed',
            feed='hay* straw* grain*',
            tool='rake pail spade tractor cart plough pitchfork wheelbarrow hose'),
        places={'in': 'barn field meadow orchard stable yard pond henhouse',
                 'on': 'farm'},
        adjectives={'animal place': 'muddy', 'animal': 'fat noisy woolly',
                    'crop': 'ripe rotten juicy fresh', 'tool': 'rusty',
                    'place': 'dusty'},
        transitive={
            'feed fed': 'person > animal', 'herd': 'person animal > animal',
            'brush': 'person > animal', 'ride rode ridden': 'person > animal',
            'grow grew grown': 'person > crop', 'pick': 'person > crop',
            'harvest': 'person > crop', 'plant': 'person > crop',
            'eat ate eaten': 'animate > crop feed', 'load': 'person > feed tool',
            'pull': 'person animal > tool', 'fix': 'person > tool',
            'repair': 'person > tool', 'dig dug': 'person animal > place'},
        intransitive={'graze': 'animal', 'work': 'person', 'grow grew': 'crop',
                      'rot rotted': 'crop', 'wander': 'animal'}),
    'sea': dict(
        nouns=dict(
            person='fisherman/fishermen sailor captain diver swimmer lifeguard',
            animal='fish/fish crab whale dolphin seal gull shark octopus turtle',
            vessel='boat ship yacht canoe raft ferry',
            gear='net anchor oar hook lantern',
            shore='shell pebble driftwood*'),
        places={'in': 'harbour bay cove water*',
                 'on': 'beach deck island pier shore'},
        adjectives={'animate': 'wet', 'animal': 'slippery', 'person': 'seasick',
                    'vessel': 'leaky fast slow', 'shore': 'smooth',
                    'place': 'sandy rocky windy stormy'},
        transitive={
            'catch caught': 'person animal > animal', 'sail': 'person > vessel',
            'steer': 'person > vessel', 'row': 'person > vessel',
            'pull': 'person > gear vessel', 'mend': 'person > gear vessel',
            'spot spotted': 'animate > animal vessel',
            'rescue': 'person > person animal', 'collect': 'person > shore',
            'gather': 'person > shore', 'tie': 'person > vessel gear'},
        intransitive={'swim swam': 'animate', 'dive': 'person animal',
                      'float': 'vessel person', 'sink sank': 'vessel',
                      'drift': 'vessel', 'splash': 'person animal'}),
    'city': dict(
        nouns=dict(
            person='driver officer mayor tourist cyclist builder postman/postmen '
                   'commuter',
            animal='pigeon rat',
            vehicle='car bus taxi cab bicycle truck tram van',
            item='ticket sign newspaper parcel umbrella suitcase'),
        places={'in': 'park square office cafe museum',
                 'on': 'street bridge pavement corner', 'at': 'station'},
        adjectives={'vehicle': 'fast slow noisy', 'person': 'busy rich wealthy polite',
                    'item': 'wet', 'place': 'busy noisy'},
        transitive={
            'drive drove driven': 'person > vehicle', 'stop stopped': 'person > vehicle',
            'wash': 'person > vehicle', 'deliver': 'person > item',
            'meet met': 'person > person', 'pay paid': 'person > person',
            'board': 'person > vehicle', 'cross': 'animate > place',
            'feed fed': 'person > animal'},
        intransitive={'arrive': 'person vehicle', 'honk': 'vehicle',
                      'stop stopped': 'vehicle'}),
    'school': dict(
        nouns=dict(
            person='teacher pupil student classmate tutor principal janitor',
            animal='hamster goldfish/goldfish',
            supply='pencil pen notebook ruler eraser crayon chalk* glue*',
            work='lesson exam essay homework* quiz/quizzes poem story picture '
                 'question',
            furniture='desk chair blackboard'),
        places={'in': 'classroom library hall gym corridor',
                 'on': 'playground'},
        adjectives={'person': 'clever smart curious polite',
                    'work': 'difficult easy long short', 'supply': 'sharp blunt'},
        transitive={
            'teach taught': 'person > person', 'write wrote written': 'person > work',
            'draw drew drawn': 'person > work', 'study': 'person > work',
            'check': 'person > work', 'finish': 'person > work',
            'borrow': 'person > supply thing', 'lend lent': 'person > supply thing',
            'sharpen': 'person > supply', 'learn': 'person > work',
            'explain': 'person > work', 'move': 'person > furniture'},
        intransitive={'listen': 'person', 'whisper': 'person', 'giggle': 'person',
                      'squeak': 'animal'}),
    'kitchen': dict(
        nouns=dict(
            person='chef waiter waitress butler housekeeper',
            food='bread* soup* egg onion tomato/tomatoes cake pie sandwich cheese* '
                 'butter* rice* sausage pancake biscuit',
            utensil='knife/knives fork spoon pan pot plate bowl cup kettle jar'),
        places={'in': 'kitchen pantry cupboard oven',
                 'on': 'table counter shelf/shelves stove'},
        adjectives={'food': 'hot sweet salty spicy tasty delicious sour',
                    'utensil': 'sharp greasy'},
        transitive={
            'cook': 'person > food', 'prepare': 'person > food',
            'bake': 'person > food', 'boil': 'person > food', 'fry': 'person > food',
            'slice': 'person > food', 'chop chopped': 'person > food',
            'stir stirred': 'person > food', 'taste': 'animate > food',
            'eat ate eaten': 'animate > food', 'wash': 'person > utensil',
            'dry': 'person > utensil', 'serve': 'person > food',
            'fill': 'person > utensil', 'mix': 'person > food'},
        intransitive={'boil': 'food', 'burn': 'food', 'cool': 'food',
                      'cook': 'person', 'hum hummed': 'person'}),
    'forest': dict(
        nouns=dict(
            person='hunter ranger woodcutter hiker camper',
            animal='deer/deer wolf/wolves fox bear owl squirrel rabbit hedgehog '
                   'badger',
            tree='tree oak pine birch willow',
            plant='mushroom berry leaf/leaves acorn twig stick branch flower',
            ground='stone rock log',
            gear='axe tent torch compass backpack map'),
        places={'in': 'forest cave den clearing valley swamp',
                 'on': 'path trail riverbank'},
        adjectives={'animal': 'wild shy fierce furry', 'tree': 'tall ancient',
                    'plant': 'poisonous', 'place': 'deep misty'},
        transitive={
            'hunt': 'person animal > animal', 'chop chopped': 'person > tree ground',
            'collect': 'person animal > plant', 'gather': 'person animal > plant',
            'climb': 'person animal > tree', 'trap trapped': 'person > animal',
            'scare': 'animate > animate', 'spot spotted': 'animate > animal',
            'pack packed': 'person > gear'},
        intransitive={'howl': 'animal', 'growl': 'animal', 'grow grew': 'tree plant',
                      'sway': 'tree', 'camp': 'person', 'hike': 'person'}),
    'hospital': dict(
        nouns=dict(
            person='doctor physician nurse patient surgeon',
            supply='pill bandage syringe thermometer mask medicine*',
            body='arm leg knee wrist ankle wound'),
        places={'in': 'ward clinic lobby hospital'},
        adjectives={'person': 'sick ill pale weak healthy', 'body': 'swollen sore',
                    'supply': 'sterile'},
        transitive={
            'examine': 'person > person body', 'inspect': 'person > person body',
            'treat': 'person > person body', 'heal': 'person > person body',
            'cure': 'person > person body', 'assist': 'person > person',
            'wrap wrapped': 'person > body', 'prepare': 'person > supply',
            'count': 'person > supply'},
        intransitive={'recover': 'person', 'cough': 'person', 'sneeze': 'person',
                      'faint': 'person'}),
    'market': dict(
        nouns=dict(
            person='vendor merchant shopkeeper customer buyer butcher grocer baker',
            produce='banana lemon melon grape cherry peach fig',
            goods='scarf/scarves rug vase candle doll toy hat'),
        places={'in': 'market shop store', 'at': 'stall'},
        adjectives={'produce': 'ripe sweet juicy', 'goods': 'colourful pretty lovely soft'},
        transitive={
            'buy bought': 'person > produce goods', 'purchase': 'person > produce goods',
            'sell sold': 'person > produce goods', 'weigh': 'person > produce',
            'wrap wrapped': 'person > goods', 'pack packed': 'person > produce goods',
            'choose chose chosen': 'person > produce goods',
            'select': 'person > produce goods', 'count': 'person > produce goods',
            'display': 'person > produce goods'},
        intransitive={'bargain': 'person', 'chat chatted': 'person', 'talk': 'person',
                      'haggle': 'person'}),
    'workshop': dict(
        nouns=dict(
            person='carpenter mechanic plumber welder apprentice',
            tool='hammer screwdriver wrench chisel ladder drill',
            material='plank nail screw brick pipe wire',
            item='cabinet bench clock engine wheel'),
        places={'in': 'workshop garage shed cellar'},
        adjectives={'tool': 'rusty sharp blunt', 'material': 'smooth rough',
                    'item': 'sturdy'},
        transitive={
            'build built': 'person > item', 'construct': 'person > item',
            'fix': 'person > item tool', 'repair': 'person > item tool',
            'polish': 'person > item tool', 'bend bent': 'person > material',
            'measure': 'person > material item', 'sharpen': 'person > tool',
            'lift': 'person > item material tool', 'examine': 'person > item tool',
            'inspect': 'person > item tool'},
        intransitive={'hum hummed': 'person', 'whistle': 'person', 'work': 'person'}),
    'sport': dict(
        nouns=dict(
            person='player coach referee goalkeeper athlete fan',
            gear='racket helmet trophy medal',
            event='match game race',
            goal='goal point'),
        places={'on': 'pitch court track', 'in': 'stadium gym'},
        adjectives={'person': 'strong quick fit', 'event': 'exciting long'},
        transitive={
            'kick': 'person > gear thing', 'win won': 'person > event gear',
            'play': 'person > event', 'watch': 'person > event',
            'cheer': 'person > person', 'score': 'person > goal',
            'catch caught': 'person > gear thing'},
        intransitive={'jump': 'person animal', 'sprint': 'person', 'cheer': 'person',
                      'stretch': 'person'}),
}

# Paraphrases swap these; minimal-pair negatives never do.
SYNONYM_PAIRS = (
    'buy purchase, fix repair, choose select, collect gather, cook prepare, '
    'help assist, build construct, cure heal, examine inspect, hurry rush, '
    'chat talk, shout yell, doctor physician, shop store, path trail, '
    'pupil student, bucket pail, stone rock, taxi cab, big large, small little, '
    'happy glad, sick ill, pretty lovely, huge enormous, tasty delicious, '
    'rich wealthy, dirty filthy, clever smart')
SYNONYMS = {a: b for pair in SYNONYM_PAIRS.split(', ')
            for a, b in (pair.split(), pair.split()[::-1])}

MASCULINE = frozenset('man boy grandfather ploughman fisherman postman butler'.split())
FEMININE = frozenset('woman girl grandmother milkmaid waitress'.split())
