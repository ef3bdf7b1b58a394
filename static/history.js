// The history page's actions. Each one calls the API, then reloads the page, so what is shown
// always comes from the server's own rendering. Times are shown in the reader's time zone.

import { deleteSession, finishSession } from './api.js';

/** Delete asks twice: a second click within this time confirms it. */
const CONFIRM_MS = 4000;

const ACTIONS = {
  finish: { run: finishSession, failed: 'Could not mark it complete' },
  delete: { run: deleteSession, failed: 'Could not delete it' },
};

async function onClick(event) {
  const button = event.target.closest('button[data-action]');
  if (!button || button.disabled) return;
  const action = ACTIONS[button.dataset.action];
  if (button.dataset.action === 'delete' && !confirmed(button)) return;
  button.disabled = true;
  try {
    await action.run(button.dataset.sessionId);
    location.reload();
  } catch (error) {
    button.disabled = false;
    const message = document.getElementById('action-message');
    message.textContent = `${action.failed}: ${error.message}`;
    message.dataset.kind = 'error';
  }
}

/** First click arms the button; only a second click soon after goes through. */
function confirmed(button) {
  if (button.dataset.armed) return true;
  const label = button.textContent;
  button.dataset.armed = 'true';
  button.textContent = 'Click again to delete';
  setTimeout(() => {
    delete button.dataset.armed;
    button.textContent = label;
  }, CONFIRM_MS);
  return false;
}

function localizeTimes() {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });
  for (const time of document.querySelectorAll('time[datetime]')) {
    time.title = time.textContent;
    time.textContent = format.format(new Date(time.dateTime));
  }
}

document.addEventListener('click', onClick);
localizeTimes();
