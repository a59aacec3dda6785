// The spelled line: a letter that stays the top answer for holdMs joins it once.
// "space" adds a space, "del" removes the last character, "nothing" (no hand) adds nothing.
// The same letter joins again only after the answer changed (another letter, or no hand).
"use strict";

class Speller {
  constructor(holdMs, minProbability) {
    this.holdMs = holdMs;
    this.minProbability = minProbability;
    this.text = "";
    this.candidate = null;
    this.since = 0;
    this.used = false;
  }

  // label: the top answer (null: no hand); returns true when the line changed.
  see(label, probability, now) {
    if (label === null || label === "nothing" || probability < this.minProbability) {
      this.candidate = null;
      return false;
    }
    if (label !== this.candidate) {
      this.candidate = label;
      this.since = now;
      this.used = false;
      return false;
    }
    if (this.used || now - this.since < this.holdMs) {
      return false;
    }
    this.used = true;
    if (label === "space") {
      this.text += " ";
    } else if (label === "del") {
      this.text = this.text.slice(0, -1);
    } else {
      this.text += label;
    }
    return true;
  }

  clear() {
    this.text = "";
    this.candidate = null;
  }
}

if (typeof module !== "undefined") {
  module.exports = { Speller };
}
