/* dbmaint console: makes a parent page (body data-page="parent") live from /api/v1/events.
 * Changes are collected and applied at most every BATCH_MS, in one animation frame, so a parent of
 * 10,000 children stays smooth. No inline script is needed: the page says what it is in data attributes. */
(function () {
  "use strict";
  var BATCH_MS = 200;
  var TERMINAL = { completed: true, failed: true, cancelled: true };
  var body = document.body;
  if (!body || body.getAttribute("data-page") !== "parent" || typeof EventSource === "undefined") {
    return;
  }
  var jobId = body.getAttribute("data-job-id");
  var pending = new Map();
  var timer = null;
  var reloading = false;
  var cells = new Map();
  Array.prototype.forEach.call(document.querySelectorAll("td[data-child]"), function (cell) {
    cells.set(cell.getAttribute("data-child"), cell);
  });

  function word(status) {
    return String(status || "").replace(/^JOB_STATUS_/, "").toLowerCase();
  }

  function setStatus(element, status) {
    if (element && element.getAttribute("data-status") !== status) {
      element.setAttribute("data-status", status);
      element.textContent = status;
    }
  }

  function reloadPage() {
    if (!reloading) {
      reloading = true;
      window.location.reload();
    }
  }

  function applyParent(job) {
    var status = word(job.status);
    setStatus(document.getElementById("parent-status"), status);
    var progress = document.querySelector("#parent-progress progress");
    var p = job.progress;
    if (progress && p) {
      var done = (p.succeeded || 0) + (p.failed || 0) + (p.cancelled || 0);
      progress.max = p.total || 1;
      progress.value = done;
      var count = document.querySelector("#parent-progress .count");
      if (count) {
        count.textContent = done + "/" + (p.total || 0);
      }
    }
    if (TERMINAL[status]) {
      var cancel = document.getElementById("cancel");
      if (cancel && cancel.parentNode) {
        cancel.parentNode.removeChild(cancel);
      }
    }
  }

  function applyChild(job) {
    var cell = cells.get(job.id);
    if (!cell) {
      return false;
    }
    var status = word(job.status);
    setStatus(cell, status);
    var row = document.querySelector('tr[data-child-row="' + job.id + '"] td.status');
    setStatus(row, status);
    return true;
  }

  function flush() {
    timer = null;
    var batch = pending;
    pending = new Map();
    window.requestAnimationFrame(function () {
      var unknown = false;
      batch.forEach(function (job) {
        if (job.id === jobId) {
          applyParent(job);
        } else if (!applyChild(job)) {
          unknown = true;
        }
      });
      if (unknown) {
        reloadPage();
      }
    });
  }

  function queue(job) {
    pending.set(job.id, job);
    if (timer === null) {
      timer = window.setTimeout(flush, BATCH_MS);
    }
  }

  /* After a reset (changes we may have missed): read the parent and every child again through the JSON API. */
  function refetch(token) {
    var url = "/api/v1/jobs/" + encodeURIComponent(jobId) + "?children_page_size=5000";
    if (token) {
      url += "&children_page_token=" + encodeURIComponent(token);
    }
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) {
          throw new Error("HTTP " + response.status);
        }
        return response.json();
      })
      .then(function (answer) {
        if (answer.job) {
          queue(answer.job);
        }
        (answer.children || []).forEach(queue);
        if (answer.nextChildrenPageToken) {
          refetch(answer.nextChildrenPageToken);
        }
      })
      .catch(reloadPage);
  }

  // From the change the page's data was read at: nothing committed since is missed.
  var since = body.getAttribute("data-since");
  var source = new EventSource("/api/v1/events" + (since ? "?after=" + encodeURIComponent(since) : ""));
  source.addEventListener("job", function (event) {
    var job;
    try {
      job = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    if (job.id === jobId || job.parentId === jobId) {
      queue(job);
    }
  });
  source.addEventListener("reset", function () {
    refetch("");
  });
})();
