// The chat panel: messages over the room's "chat" data channel.

const MAX_LINES = 500;

export class ChatPanel {
  /**
   * @param {HTMLElement} root  contains .chat-log, form.chat-form with input[name=text]
   * @param {import('./session.js').RoomSession} session
   * @param {(unread: number) => void} [onUnread]
   */
  constructor(root, session, onUnread = () => {}) {
    this.root = root;
    this.log = root.querySelector('.chat-log');
    this.form = root.querySelector('.chat-form');
    this.input = this.form.querySelector('input[name=text]');
    this.session = session;
    this.unread = 0;
    this.onUnread = onUnread;
    session.addEventListener('chat', (e) => {
      this.add(e.detail.from || 'someone', e.detail.text, e.detail.ts, false);
      if (root.hidden) {
        this.unread += 1;
        onUnread(this.unread);
      }
    });
    this.form.addEventListener('submit', (e) => {
      e.preventDefault();
      const text = this.input.value.trim();
      if (!text) return;
      if (new TextEncoder().encode(text).length > 4096) {
        this.note('That message is too long (4 KB at most).');
        return;
      }
      if (this.session.sendChat(text)) {
        this.add('You', text, Date.now(), true);
        this.input.value = '';
      } else {
        this.note('Chat is not connected yet; your message was not sent.');
      }
    });
  }

  opened() {
    this.unread = 0;
    this.onUnread(0);
    this.input.focus();
  }

  add(from, text, ts, mine) {
    const li = document.createElement('li');
    li.className = mine ? 'mine' : '';
    const who = document.createElement('strong');
    who.textContent = from;
    const when = document.createElement('time');
    const d = new Date(ts || Date.now());
    when.dateTime = d.toISOString();
    when.textContent = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const body = document.createElement('p');
    body.textContent = text; // never innerHTML: chat is untrusted
    li.append(who, ' ', when, body);
    this.log.append(li);
    while (this.log.children.length > MAX_LINES) this.log.firstChild.remove();
    li.scrollIntoView({ block: 'end' });
  }

  note(text) {
    const li = document.createElement('li');
    li.className = 'note';
    li.textContent = text;
    this.log.append(li);
  }
}
