/* HSI event page videos: progressive enhancement only.
 *
 * Under each video, a timeline lists the sampled frames where objects were found. Choosing one
 * pauses the video at that frame and shows the frame's boxes over it; playing, or seeking
 * elsewhere, hides them. Without this script each entry links to the video at that time (a
 * media fragment, #t=) and shows the frame's thumbnail with its boxes.
 */
(function () {
  "use strict";

  // A frame's time is recorded to the millisecond (rounded): seek a millisecond past it, so
  // that the player shows that frame and not the one before it.
  var NUDGE = 0.001;
  var SAME = 0.01;

  function each(nodes, fn) { Array.prototype.forEach.call(nodes, fn); }

  each(document.querySelectorAll("ol.timeline[data-video]"), function (timeline) {
    var video = document.getElementById(timeline.getAttribute("data-video"));
    if (!video) { return; }
    var overlays = video.parentNode.querySelectorAll("svg.boxes");
    var links = timeline.querySelectorAll("a.seek");
    var shown = null;

    function show(seconds) {
      shown = seconds;
      each(overlays, function (overlay) {
        var at = parseFloat(overlay.getAttribute("data-seconds"));
        overlay.classList.toggle("shown", seconds !== null && Math.abs(at - seconds) < SAME);
      });
      each(links, function (link) {
        var at = parseFloat(link.getAttribute("data-seconds"));
        if (seconds !== null && Math.abs(at - seconds) < SAME) {
          link.setAttribute("aria-current", "true");
        } else {
          link.removeAttribute("aria-current");
        }
      });
    }

    timeline.addEventListener("click", function (event) {
      var link = event.target.closest ? event.target.closest("a.seek") : null;
      if (!link) { return; }
      event.preventDefault();
      var seconds = parseFloat(link.getAttribute("data-seconds"));
      video.pause();
      video.currentTime = seconds + NUDGE;
      show(seconds);
    });
    video.addEventListener("play", function () { show(null); });
    video.addEventListener("seeked", function () {
      if (shown !== null && Math.abs(video.currentTime - shown) > SAME) { show(null); }
    });
  });
})();
