"""Count the words of a file: the job's own code, shipped with it as its workdir."""

import sys
from collections import Counter

words = open(sys.argv[1]).read().split()
for word, count in Counter(words).most_common(3):
    print(f"{word} {count}")
